"""The output every benchmark shares: a table of measures against their targets, and JSON on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(
    title: str, rows: list[tuple[str, str, str]], result: dict[str, Any], json_path: Path | None
) -> None:
    """Print ``title`` and the (measure, value, target) rows; write ``result`` to ``json_path`` if given."""
    name_width = max(len("measure"), *(len(name) for name, _, _ in rows)) + 2
    value_width = max(len("value"), *(len(value) for _, value, _ in rows)) + 2
    print(title)
    print(f"{'measure':<{name_width}}{'value':>{value_width}}  target")
    for name, value, target in rows:
        print(f"{name:<{name_width}}{value:>{value_width}}  {target}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {json_path}")
