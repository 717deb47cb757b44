"""A sweep's plots: each summary figure of each metric against the swept parameter, one line per label.

``sweep.json`` also holds, per metric and line, the share of its first point's figure that it keeps at
the last point, named ``LABEL_kept_LASTVALUE`` (``dmoe_kept_200ms``): how much of its zero-latency
throughput a method keeps at the largest latency, say.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Which summary figure stands for a metric in a sweep, by its kind.
FIGURE_OF_KIND = {"gauge": "mean", "counter": "rate", "events": "mean"}


def plot_sweep(out: Path, parameter: str, points: list[tuple[str, dict[str, Any]]]) -> list[Path]:
    """``points``: (parameter value as given, report.json contents) per finished run, in sweep order.
    Writes ``sweep.json`` (the figures per point) and one PNG per metric; returns the PNGs."""
    import json

    table: dict[str, dict[str, list[tuple[str, float]]]] = {}
    units: dict[str, tuple[str, str, str]] = {}
    for value, report in points:
        for name, metric in report.get("metrics", {}).items():
            figure = metric.get("figure") or FIGURE_OF_KIND.get(metric.get("kind", "gauge"), "mean")
            units[name] = (metric.get("unit", ""), metric.get("title", name), figure)
            for label, figures in report.get("summary", {}).get(name, {}).items():
                if figure in figures:
                    table.setdefault(name, {}).setdefault(label, []).append((value, figures[figure]))
    kept = kept_shares(table, [value for value, _ in points])
    summary = {"parameter": parameter, "metrics": table, "kept": kept}
    (out / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    files = []
    values = [value for value, _ in points]
    for name, lines in table.items():
        unit, title, figure = units[name]
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.add_subplot()
        for label, series in lines.items():
            xs = [values.index(v) for v, _ in series]
            axes.plot(xs, [y for _, y in series], marker="o", label=label or name)
        axes.set_xticks(range(len(values)), values)
        axes.set_xlabel(parameter)
        axes.set_ylabel(f"{figure} ({unit})" if unit else figure)
        axes.set_title(f"{title}: {figure} against {parameter}")
        if len(lines) > 1:
            axes.legend()
        axes.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"sweep-{name.replace('.', '-')}.png"
        fig.savefig(path)
        files.append(path)
    return files


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace(" ", "")).strip("_")


def kept_shares(
    table: dict[str, dict[str, list[tuple[str, float]]]], values: list[str]
) -> dict[str, dict[str, float]]:
    """metric -> ``LABEL_kept_LASTVALUE`` -> the line's figure at the sweep's last value over its
    figure at the first (lines without both, or with 0 at the first, are left out)."""
    if len(values) < 2:
        return {}
    first, last = values[0], values[-1]
    kept: dict[str, dict[str, float]] = {}
    for name, lines in table.items():
        for label, series in lines.items():
            by_value = dict(series)
            if by_value.get(first) and last in by_value:
                share = by_value[last] / by_value[first]
                kept.setdefault(name, {})[f"{_slug(label or name)}_kept_{_slug(last)}"] = share
    return kept


__all__ = ["kept_shares", "plot_sweep"]
