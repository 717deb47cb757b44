"""Everything in tesseract/ reaches the outside world through its host: checked on the source.

Only ``tesseract/net/real.py`` (the real transport) may touch sockets, threads and the wall clock;
nothing in ``tesseract/`` may import the simulator, except the command line, which hands
``tesseract sim`` to ``simulator.command`` (the entry point composes; nothing below it knows).
That is what lets the same code run over real sockets and inside the deterministic simulator.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tesseract"
#: The modules that work with the operating system directly: the real host, and the local process launcher.
REAL_TRANSPORT = {PACKAGE / "net" / "real.py", PACKAGE / "launch.py"}

FORBIDDEN_MODULES = {
    "socket",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "select",
    "selectors",
    "asyncio",
    "simulator",
}
FORBIDDEN_ATTRIBUTES = {
    ("time", "time"),
    ("time", "sleep"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "time_ns"),
    ("time", "monotonic_ns"),
    ("trio", "to_thread"),
    ("trio", "from_thread"),
    ("trio", "socket"),
    ("trio", "open_tcp_stream"),
    ("trio", "serve_tcp"),
    ("trio", "open_tcp_listeners"),
}
#: Module-level functions of ``random`` use the shared global generator; ``random.Random(seed)`` is fine.
ALLOWED_RANDOM = {"Random"}


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_MODULES:
                found.append(f"{where} imports from {node.module}")
            for alias in node.names:
                if (root, alias.name) in FORBIDDEN_ATTRIBUTES or (
                    root == "random" and alias.name not in ALLOWED_RANDOM
                ):
                    found.append(f"{where} imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair in FORBIDDEN_ATTRIBUTES:
                found.append(f"{where} uses {node.value.id}.{node.attr}")
            if node.value.id == "random" and node.attr not in ALLOWED_RANDOM:
                found.append(f"{where} uses the global random.{node.attr}")
    return found


def test_only_the_real_transport_touches_the_outside_world() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path not in REAL_TRANSPORT:
            found.extend(violations(path))
    # The command line may import the simulator's command (``from simulator import command``), nothing else.
    entry_point = [f for f in found if f.startswith("cli.py:")]
    assert all(line.endswith(" imports from simulator") for line in entry_point), entry_point
    assert [f for f in found if not f.startswith("cli.py:")] == []


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import socket\nimport time\nimport random\nfrom simulator import SimNetwork\n"
        "from trio import to_thread\nrandom.random()\ntime.sleep(1)\nrng = random.Random(3)\n"
    )
    found = violations(sample)
    assert len(found) == 5, found
    assert not any("Random" in item for item in found)
