"""The shape of the code: dependencies run one way, and the DHT knows nothing of experts.

Every import counts, wherever it stands (module level, inside a function, under TYPE_CHECKING): a
cycle hidden in a function is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tesseract", "simulator")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports (``from package import submodule`` names the
    submodule; ``from module import thing`` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def dependency_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_no_import_cycle_among_the_modules() -> None:
    graph = dependency_graph()
    # A package's __init__ re-exports its submodules; a submodule reaching back to its own package's
    # __init__ is the one cycle that is not a design problem, so edges from a module to a package
    # that contains it are left out.
    edges = {
        name: {target for target in targets if not name.startswith(f"{target}.")}
        for name, targets in graph.items()
    }
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_the_dht_imports_nothing_about_experts() -> None:
    graph = dependency_graph()
    for name, targets in graph.items():
        if name == "tesseract.dht" or name.startswith("tesseract.dht."):
            outside = {t for t in targets if not (t == "tesseract.dht" or t.startswith("tesseract.dht."))}
            allowed = {
                t
                for t in outside
                if t.startswith("tesseract.net") or t in {"tesseract.concurrency", "tesseract.console"}
            }
            assert outside == allowed, f"{name} imports {sorted(outside - allowed)}"
            source = modules()[name].read_text()
            assert "expert" not in source.lower(), f"{name} mentions experts"
