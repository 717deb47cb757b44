"""The report of a scenario run: ``report.json`` (everything), one PNG per metric, ``report.md``.

Plots use matplotlib's object API (``Figure`` and the Agg canvas) rather than pyplot: no display is
needed, the process-wide backend is left alone, and no figure stays registered after it is saved.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

import tesseract
from simulator.scenario.metrics import Recorder

__all__ = ["ReportFiles", "format_number", "plot_file_name", "summary_table", "write_report"]

_DPI = 100
_SIZE = (8.0, 4.5)  # inches

# The summary's figures, in the order the table shows them; a column appears when some metric has it.
_FIGURES = ("count", "mean", "p50", "p99", "last", "min", "max", "total", "rate")
_HEADERS = {"rate": "rate/s"}

_DISTRIBUTIONS = ("torch", "trio", "msgspec", "networkx", "matplotlib")


class ReportFiles(NamedTuple):
    json: Path
    markdown: Path
    plots: list[Path]


def write_report(
    out_dir: Path,
    *,
    scenario_name: str,
    resolved_scenario: dict,
    seed: int,
    trace_hash: str,
    recorder: Recorder,
    complete: bool,
    wall_seconds: float,
    virtual_seconds: float,
    notes: Sequence[str] = (),
) -> ReportFiles:
    """Write ``report.json``, ``<metric>.png`` per metric and ``report.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = recorder.summary()
    report = {
        "scenario": scenario_name,
        "seed": seed,
        "trace_hash": trace_hash,
        "complete": complete,
        "wall_s": wall_seconds,
        "virtual_s": virtual_seconds,
        "versions": _versions(),
        "scenario_resolved": resolved_scenario,
        "summary": summary,
        "metrics": recorder.to_json(),
        "notes": list(notes),
    }
    json_path = out_dir / "report.json"
    # One top-level key a line: readable at a glance, while a million points stay one line, not four
    # million. Key order is the order above and the recorder's (declaration, then natural label order).
    lines = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in report.items()]
    json_path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")

    plots = []
    for name in recorder.names():
        path = out_dir / plot_file_name(name)
        _plot(recorder, name, virtual_seconds).savefig(path, dpi=_DPI)
        plots.append(path)
        other = recorder.against(name)
        if other is not None and recorder.labels(name):
            path = out_dir / against_file_name(name, other)
            _plot_against(recorder, name, other).savefig(path, dpi=_DPI)
            plots.append(path)

    markdown_path = out_dir / "report.md"
    markdown_path.write_text(
        _markdown(
            recorder,
            summary,
            scenario_name=scenario_name,
            seed=seed,
            trace_hash=trace_hash,
            complete=complete,
            wall_seconds=wall_seconds,
            virtual_seconds=virtual_seconds,
            plots=plots,
            notes=notes,
        ),
        encoding="utf-8",
    )
    return ReportFiles(json=json_path, markdown=markdown_path, plots=plots)


def plot_file_name(name: str) -> str:
    """``dht.get_latency`` -> ``dht-get_latency.png``."""
    return name.replace(".", "-") + ".png"


def against_file_name(name: str, other: str) -> str:
    """``train.accuracy`` against ``train.updates`` -> ``train-accuracy-against-train-updates.png``."""
    return plot_file_name(f"{name}.against.{other}")


def summary_table(recorder: Recorder) -> str:
    """The summary as a plain-text table with aligned columns, for the terminal."""
    headers, rows = _table(recorder, recorder.summary())
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    text_columns = 3  # metric, label, unit: left-aligned; figures right-aligned

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if index < text_columns else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, rows)])


def format_number(value: float) -> str:
    """Compact, with at least 3 significant digits: ``12``, ``1234``, ``12.3``, ``0.0123``, ``1.23e+07``."""
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 1e7 or magnitude < 1e-3:
        return f"{value:.3g}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.{2 - math.floor(math.log10(magnitude))}f}"
    return f"{value:.3g}"


def _table(
    recorder: Recorder, summary: dict[str, dict[str, dict[str, float]]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the terminal and the markdown table. A blank cell is a figure the
    metric's kind does not have; ``-`` marks a metric without points after the warm-up."""
    present = {key for by_label in summary.values() for figures in by_label.values() for key in figures}
    columns = [key for key in _FIGURES if key in present]
    headers = ["metric", "label", "unit", *(_HEADERS.get(key, key) for key in columns)]
    rows = []
    for name, by_label in summary.items():
        unit = recorder.info(name)[0]
        if not by_label:
            rows.append([name, "", unit, *("-" for _ in columns)])
        for label, figures in by_label.items():
            cells = [format_number(figures[key]) if key in figures else "" for key in columns]
            rows.append([name, label, unit, *cells])
    return headers, rows


def _markdown(
    recorder: Recorder,
    summary: dict[str, dict[str, dict[str, float]]],
    *,
    scenario_name: str,
    seed: int,
    trace_hash: str,
    complete: bool,
    wall_seconds: float,
    virtual_seconds: float,
    plots: list[Path],
    notes: Sequence[str],
) -> str:
    virtual = _duration(virtual_seconds)
    wall = _duration(wall_seconds)
    if complete:
        status = f"Complete: ran to virtual time {virtual} in {wall} of wall time."
    else:
        status = f"**INCOMPLETE (stopped at virtual time {virtual})**, after {wall} of wall time."
    out = [f"# Scenario {scenario_name}, seed {seed}", "", status, "", f"Trace hash: `{trace_hash}`", ""]
    if recorder.warmup > 0:
        out += [f"Summaries leave out the warm-up (the first {_duration(recorder.warmup)}).", ""]

    headers, rows = _table(recorder, summary)
    out += [
        "## Summary",
        "",
        _markdown_row(headers),
        "|" + "|".join(["---"] * 3 + ["--:"] * (len(headers) - 3)) + "|",
    ]
    out += [_markdown_row(row) for row in rows]
    out.append("")

    if plots:
        out += ["## Plots", ""]
        titles = {plot_file_name(name): recorder.info(name)[1] for name in recorder.names()}
        for name in recorder.names():
            if (other := recorder.against(name)) is not None:
                titles[against_file_name(name, other)] = (
                    f"{recorder.info(name)[1]} against {recorder.info(other)[1]}"
                )
        for path in plots:
            title = titles.get(path.name, path.stem).replace("[", "(").replace("]", ")")
            out += [f"![{title}]({path.name})", ""]

    if notes:
        out += ["## Notes", ""]
        out += [f"- {note}" for note in notes]
        out.append("")
    return "\n".join(out)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _duration(seconds: float) -> str:
    """``42 s``; ``900 s (15 min)``; ``7200 s (2 h)``: seconds, and a larger unit when it helps."""
    text = f"{format_number(seconds)} s"
    if seconds >= 7200:
        return f"{text} ({format_number(seconds / 3600)} h)"
    if seconds >= 600:
        return f"{text} ({format_number(seconds / 60)} min)"
    return text


def _time_axis(virtual_seconds: float) -> tuple[float, str]:
    """Seconds per unit of the x axis, and the unit's name."""
    if virtual_seconds > 7200:
        return 3600.0, "h"
    if virtual_seconds > 600:
        return 60.0, "min"
    return 1.0, "s"


def _plot(recorder: Recorder, name: str, virtual_seconds: float) -> Figure:
    unit, title, kind = recorder.info(name)
    scale, time_unit = _time_axis(virtual_seconds)
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(f"virtual time ({time_unit})")
    axes.set_ylabel(unit)

    labels = recorder.labels(name)
    last_time = 0.0
    legend_entries = 0
    if kind == "events":
        # One dot per event would be unreadable; each interval becomes a point. A share (1 or 0 per
        # attempt) is plotted as its mean, the success rate; anything else as p50 and a dashed p99.
        interval = recorder.interval
        for label, buckets in recorder.buckets(name).items():
            if not buckets:
                continue
            last_time = max(last_time, buckets[-1].start + interval)
            xs: list[float] = []
            mids: list[float] = []
            highs: list[float] = []
            previous = None
            for bucket in buckets:
                if previous is not None and bucket.start - previous > 1.5 * interval:
                    xs.append(math.nan)  # an interval without events: break the line
                    mids.append(math.nan)
                    highs.append(math.nan)
                previous = bucket.start
                xs.append((bucket.start + interval / 2) / scale)
                mids.append(bucket.mean if unit == "share" else bucket.p50)
                highs.append(bucket.p99)
            prefix = f"{label} " if label else ""
            if unit == "share":
                axes.plot(xs, mids, label=label or title)
                legend_entries += 1
            else:
                (line,) = axes.plot(xs, mids, label=f"{prefix}p50")
                axes.plot(xs, highs, linestyle="--", color=line.get_color(), label=f"{prefix}p99")
                legend_entries += 2
        if unit == "share":
            axes.set_ylabel(f"share (mean per {format_number(interval)} s)")
        else:
            axes.set_ylabel(f"{unit} (p50, p99 per {format_number(interval)} s)")
    else:
        for label in labels:
            times, values = recorder.arrays(name, label)
            if not times:
                continue
            last_time = max(last_time, times[-1])
            axes.plot(
                [t / scale for t in times],
                values,
                label=label or title,
                drawstyle="steps-post" if kind == "counter" else "default",
            )
            legend_entries += 1

    if legend_entries == 0:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", va="center", color="0.4")
    right = max(virtual_seconds, last_time) / scale
    if right > 0:
        axes.set_xlim(0, right)
    if recorder.warmup > 0:
        axes.axvspan(0, recorder.warmup / scale, color="0.88", zorder=0)
        axes.text(
            recorder.warmup / scale / 2,
            0.97,
            "warm-up",
            transform=blended_transform_factory(axes.transData, axes.transAxes),
            ha="center",
            va="top",
            color="0.3",
            fontsize="small",
            # Over the lines, on a patch of the shading, so that neither hides the other's meaning.
            bbox={"facecolor": "0.88", "edgecolor": "none", "alpha": 0.85, "pad": 1.5},
            zorder=5,
        )
    if len(labels) > 1 or (kind == "events" and unit != "share" and legend_entries):
        axes.legend(fontsize="small", ncols=max(1, math.ceil(legend_entries / 12)))
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def _plot_against(recorder: Recorder, name: str, other: str) -> Figure:
    """Gauge ``name`` against gauge ``other``, each line's points paired by their sample times."""
    unit, title, _ = recorder.info(name)
    other_unit, other_title, _ = recorder.info(other)
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(f"{title} against {other_title[:1].lower()}{other_title[1:]}")
    axes.set_xlabel(other_unit)
    axes.set_ylabel(unit)
    labels, others = recorder.labels(name), set(recorder.labels(other))
    for label in labels:
        xs_at = dict(zip(*recorder.arrays(other, label), strict=True)) if label in others else {}
        pairs = [(xs_at[t], v) for t, v in zip(*recorder.arrays(name, label), strict=True) if t in xs_at]
        if pairs:
            axes.plot([x for x, _ in pairs], [y for _, y in pairs], marker=".", label=label or title)
    if len(labels) > 1:
        axes.legend(fontsize="small")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def _versions() -> dict[str, str | None]:
    """Versions of what shaped the run; from package metadata, so torch is not imported for this."""
    found: dict[str, str | None] = {"python": platform.python_version(), "tesseract": tesseract.__version__}
    for distribution in _DISTRIBUTIONS:
        try:
            found[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[distribution] = None
    return found
