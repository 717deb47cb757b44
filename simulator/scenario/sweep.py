"""A sweep's plots: each summary figure of each metric against the swept parameter, one line per label."""

from __future__ import annotations

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
            figure = FIGURE_OF_KIND.get(metric.get("kind", "gauge"), "mean")
            units[name] = (metric.get("unit", ""), metric.get("title", name), figure)
            for label, figures in report.get("summary", {}).get(name, {}).items():
                if figure in figures:
                    table.setdefault(name, {}).setdefault(label, []).append((value, figures[figure]))
    (out / "sweep.json").write_text(json.dumps({"parameter": parameter, "metrics": table}, indent=1) + "\n")
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


__all__ = ["plot_sweep"]
