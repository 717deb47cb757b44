"""The metrics of a simulated run: named time series in virtual time, and their summaries.

A metric is declared once with a unit, a title and a kind, then filled during the run:

- ``gauge``: a value sampled at times (peers online, queue length). Summary: last, mean, min, max.
- ``counter``: a cumulative count sampled at times (requests sent). Summary: total (the increase
  since the warm-up ended) and rate per second.
- ``events``: individual observations, each at its time (one latency per request; 1 or 0 per
  attempt with unit ``"share"``, whose mean is then the success rate). Summary: count, mean, p50, p99.

A label splits a metric into lines (per group, per method, per region); the default label is ``""``.
Points are kept as two ``array('d')`` per line (16 bytes a point): a big run observes ~10^6 events.
Samples before the warm-up are kept (the plots show them) but left out of the summaries.
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import groupby
from typing import NamedTuple

__all__ = ["KINDS", "Bucket", "Recorder"]

KINDS = ("gauge", "counter", "events")

# Lowercase words joined by dots: the report turns dots into dashes for file names, which stays
# one-to-one only without dashes, and case-insensitive file systems need one case.
_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


class Bucket(NamedTuple):
    """The events of one line in one interval of virtual time ``[start, start + interval)``."""

    start: float
    count: int
    mean: float
    p50: float
    p99: float


@dataclass
class _Line:
    times: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))
    in_order: bool = True

    def append(self, t: float, value: float) -> None:
        if self.times and t < self.times[-1]:
            self.in_order = False
        self.times.append(t)
        self.values.append(value)

    def sort(self) -> None:
        """Put the points in time order (stable: equal times keep their arrival order)."""
        if self.in_order:
            return
        times, values = self.times, self.values
        order = sorted(range(len(times)), key=times.__getitem__)
        self.times = array("d", (times[i] for i in order))
        self.values = array("d", (values[i] for i in order))
        self.in_order = True

    def after(self, warmup: float) -> tuple[array, array]:
        """The points at ``t >= warmup`` (the line must be sorted)."""
        start = bisect_left(self.times, warmup)
        return self.times[start:], self.values[start:]


@dataclass
class _Metric:
    unit: str
    title: str
    kind: str
    figure: str | None = None
    against: str | None = None
    lines: dict[str, _Line] = field(default_factory=dict)


class Recorder:
    """Time series of one run, filled in virtual time; pure bookkeeping, no I/O."""

    def __init__(self, warmup: float = 0.0, interval: float = 10.0) -> None:
        if not (math.isfinite(warmup) and warmup >= 0):
            raise ValueError(f"warmup must be finite and >= 0, not {warmup!r}")
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be finite and > 0, not {interval!r}")
        self.warmup = float(warmup)
        #: Width of the buckets that turn events into a time series for plotting.
        self.interval = float(interval)
        self._metrics: dict[str, _Metric] = {}

    def declare(
        self,
        name: str,
        *,
        unit: str,
        title: str,
        kind: str = "gauge",
        figure: str | None = None,
        against: str | None = None,
    ) -> None:
        """Declare a metric; again with the same fields is a no-op, with other fields a ValueError.
        ``figure``: the summary figure that stands for it in a sweep, when not its kind's usual one
        (``last`` for an estimate that improves as the run goes on). ``against``: a gauge sampled at
        the same times, to plot this one against as well as against time (accuracy against
        updates)."""
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r}: use lowercase letters, digits and _, joined by dots")
        if kind not in KINDS:
            raise ValueError(f"metric {name!r}: kind must be one of {KINDS}, not {kind!r}")
        existing = self._metrics.get(name)
        if existing is None:
            self._metrics[name] = _Metric(unit=unit, title=title, kind=kind, figure=figure, against=against)
        elif (existing.unit, existing.title, existing.kind, existing.figure, existing.against) != (
            unit,
            title,
            kind,
            figure,
            against,
        ):
            raise ValueError(
                f"metric {name!r} already declared as kind={existing.kind!r} unit={existing.unit!r} "
                f"title={existing.title!r}; now kind={kind!r} unit={unit!r} title={title!r}"
            )

    def sample(self, name: str, t: float, value: float, *, label: str = "") -> None:
        """One point of a gauge or counter."""
        metric = self._checked(name, t, value)
        if metric.kind == "events":
            raise ValueError(f"metric {name!r} is of kind 'events': use observe(), not sample()")
        self._line(metric, label).append(float(t), float(value))

    def observe(self, name: str, t: float, value: float, *, label: str = "") -> None:
        """One observation of an ``events`` metric (a latency, a 1 or 0 for success)."""
        metric = self._checked(name, t, value)
        if metric.kind != "events":
            raise ValueError(f"metric {name!r} is of kind {metric.kind!r}: use sample(), not observe()")
        self._line(metric, label).append(float(t), float(value))

    def names(self) -> list[str]:
        """The declared metrics, in declaration order."""
        return list(self._metrics)

    def info(self, name: str) -> tuple[str, str, str]:
        """``(unit, title, kind)`` of a declared metric."""
        metric = self._get(name)
        return metric.unit, metric.title, metric.kind

    def against(self, name: str) -> str | None:
        """The gauge a metric is also plotted against, if any."""
        return self._get(name).against

    def labels(self, name: str) -> list[str]:
        """The labels of a metric that has points, in natural order (``g2`` before ``g10``)."""
        return sorted(self._get(name).lines, key=_natural_key)

    def series(self, name: str) -> dict[str, list[tuple[float, float]]]:
        """Label -> points ``(t, value)`` in time order, warm-up included."""
        metric = self._get(name)
        result = {}
        for label in self.labels(name):
            line = metric.lines[label]
            line.sort()
            result[label] = list(zip(line.times, line.values, strict=True))
        return result

    def arrays(self, name: str, label: str = "") -> tuple[array, array]:
        """The times and values of one line in time order (no copy: do not modify them)."""
        line = self._get(name).lines.get(label)
        if line is None:
            return array("d"), array("d")
        line.sort()
        return line.times, line.values

    def buckets(self, name: str) -> dict[str, list[Bucket]]:
        """Label -> the non-empty buckets of ``interval`` seconds of an ``events`` metric, in time
        order, warm-up included: what the report plots (p50 and p99, or the mean of a share)."""
        metric = self._get(name)
        if metric.kind != "events":
            raise ValueError(f"metric {name!r} is of kind {metric.kind!r}; only 'events' are bucketed")
        result: dict[str, list[Bucket]] = {}
        for label in self.labels(name):
            times, values = self.arrays(name, label)
            found: list[Bucket] = []
            # floor(t / interval) never decreases along sorted times, so each bucket is one run.
            for index, positions in groupby(
                range(len(times)), key=lambda i: math.floor(times[i] / self.interval)
            ):
                chunk = sorted(values[i] for i in positions)
                found.append(
                    Bucket(
                        start=index * self.interval,
                        count=len(chunk),
                        mean=math.fsum(chunk) / len(chunk),
                        p50=_percentile(chunk, 0.50),
                        p99=_percentile(chunk, 0.99),
                    )
                )
            result[label] = found
        return result

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Name -> label -> figures, from the points at ``t >= warmup``.

        gauge: last, mean (of the samples), min, max; counter: total (last value minus the value at
        the end of the warm-up: the last sample at ``t <= warmup``, 0 if none) and rate (total per
        second from the warm-up's end to the last sample; left out when that span is 0); events:
        count, and mean, p50, p99 when count > 0 (percentiles interpolate linearly between ranks).
        A gauge or counter line without points after the warm-up is left out.
        """
        result: dict[str, dict[str, dict[str, float]]] = {}
        for name, metric in self._metrics.items():
            figures_by_label: dict[str, dict[str, float]] = {}
            for label in self.labels(name):
                line = metric.lines[label]
                line.sort()
                times, values = line.after(self.warmup)
                if metric.kind == "events":
                    figures_by_label[label] = _event_figures(values)
                elif not values:
                    continue
                elif metric.kind == "gauge":
                    figures_by_label[label] = {
                        "last": values[-1],
                        "mean": math.fsum(values) / len(values),
                        "min": min(values),
                        "max": max(values),
                    }
                else:
                    base_index = bisect_right(line.times, self.warmup) - 1
                    base = line.values[base_index] if base_index >= 0 else 0.0
                    total = values[-1] - base
                    figures = {"total": total}
                    span = times[-1] - self.warmup
                    if span > 0:
                        figures["rate"] = total / span
                    figures_by_label[label] = figures
            result[name] = figures_by_label
        return result

    def to_json(self) -> dict:
        """Everything, JSON-serializable: ``{name: {unit, title, kind, [figure], series: {label: [[t, v],
        ...]}}}``."""
        result = {}
        for name, metric in self._metrics.items():
            series = {}
            for label in self.labels(name):
                times, values = self.arrays(name, label)
                series[label] = [[t, v] for t, v in zip(times, values, strict=True)]
            result[name] = {"unit": metric.unit, "title": metric.title, "kind": metric.kind, "series": series}
            if metric.figure is not None:
                result[name]["figure"] = metric.figure
        return result

    def _get(self, name: str) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None:
            raise KeyError(f"metric {name!r} was not declared")
        return metric

    def _checked(self, name: str, t: float, value: float) -> _Metric:
        metric = self._get(name)
        if not math.isfinite(t):
            raise ValueError(f"metric {name!r}: time must be finite, not {t!r}")
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r}: value must be finite, not {value!r} (at t={t})")
        return metric

    @staticmethod
    def _line(metric: _Metric, label: str) -> _Line:
        line = metric.lines.get(label)
        if line is None:
            line = metric.lines[label] = _Line()
        return line


def _event_figures(values: array) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": math.fsum(ordered) / len(ordered),
        "p50": _percentile(ordered, 0.50),
        "p99": _percentile(ordered, 0.99),
    }


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolating linearly between ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _natural_key(label: str) -> list[tuple[int, int | str]]:
    return [
        (0, int(part)) if part[0] in _DIGITS else (1, part) for part in re.split(r"([0-9]+)", label) if part
    ]


_DIGITS = frozenset("0123456789")
