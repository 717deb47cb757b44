"""The scenario metrics recorder (summaries, warm-up, labels, loud errors) and the report files."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from simulator.scenario import report as report_module
from simulator.scenario.metrics import Bucket, Recorder
from simulator.scenario.report import ReportFiles, format_number, summary_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- Recorder ------------------------------------------------------------------------------------


def test_gauge_summary_leaves_out_the_warmup() -> None:
    recorder = Recorder(warmup=5.0)
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    for t, value in [(0, 100), (2, 1), (5, 10), (6, 30), (8, 20), (9, 12)]:
        recorder.sample("swarm.online", t, value)
    assert recorder.summary() == {"swarm.online": {"": {"last": 12, "mean": 18, "min": 10, "max": 30}}}
    # The warm-up points are kept for the plots.
    assert recorder.series("swarm.online")[""][:2] == [(0.0, 100.0), (2.0, 1.0)]


def test_counter_total_and_rate_count_from_the_end_of_the_warmup() -> None:
    recorder = Recorder(warmup=5.0)
    recorder.declare("rpc.sent", unit="requests", title="Requests sent", kind="counter")
    for t, value in [(0, 0), (5, 10), (10, 30), (25, 70)]:
        recorder.sample("rpc.sent", t, value)
    figures = recorder.summary()["rpc.sent"][""]
    assert figures["total"] == 60  # 70 - the value at t=5
    assert figures["rate"] == pytest.approx(60 / 20)

    no_warmup = Recorder()
    no_warmup.declare("rpc.sent", unit="requests", title="Requests sent", kind="counter")
    for t, value in [(4, 8), (10, 20)]:  # no sample at 0: the counter started at 0
        no_warmup.sample("rpc.sent", t, value)
    assert no_warmup.summary()["rpc.sent"][""] == {"total": 20, "rate": 2.0}


def test_event_summary_gives_count_mean_and_percentiles() -> None:
    recorder = Recorder(warmup=10.0)
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    recorder.observe("dht.get_latency", 3.0, 1000.0)  # warm-up: left out
    for i in range(1, 101):
        recorder.observe("dht.get_latency", 10.0 + i, float(i))
    figures = recorder.summary()["dht.get_latency"][""]
    assert figures["count"] == 100
    assert figures["mean"] == pytest.approx(50.5)
    assert figures["p50"] == pytest.approx(50.5)  # linear between ranks, as numpy
    assert figures["p99"] == pytest.approx(99.01)


def test_share_events_mean_is_the_success_rate() -> None:
    recorder = Recorder()
    recorder.declare("rpc.success", unit="share", title="Successful calls", kind="events")
    for i in range(10):
        recorder.observe("rpc.success", float(i), 1.0 if i % 5 else 0.0)
    assert recorder.summary()["rpc.success"][""]["mean"] == pytest.approx(0.8)


def test_labels_split_a_metric_and_points_come_back_in_time_order() -> None:
    recorder = Recorder()
    recorder.declare("rpc.latency", unit="s", title="RPC latency", kind="events")
    for label in ("g10", "g2", "g1"):
        recorder.observe("rpc.latency", 5.0, 0.5, label=label)
    recorder.observe("rpc.latency", 1.0, 0.1, label="g1")  # out of time order: recorded at its time
    recorder.observe("rpc.latency", 3.0, 0.3, label="g1")
    series = recorder.series("rpc.latency")
    assert list(series) == ["g1", "g2", "g10"]  # natural order
    assert series["g1"] == [(1.0, 0.1), (3.0, 0.3), (5.0, 0.5)]
    assert recorder.summary()["rpc.latency"]["g2"]["count"] == 1
    assert recorder.summary()["rpc.latency"]["g1"]["p50"] == pytest.approx(0.3)


def test_event_metric_without_observations_after_the_warmup_counts_zero() -> None:
    recorder = Recorder(warmup=100.0)
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    recorder.observe("dht.get_latency", 1.0, 0.2)
    recorder.sample("swarm.online", 1.0, 5)
    assert recorder.summary() == {"dht.get_latency": {"": {"count": 0}}, "swarm.online": {}}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_and_times_are_refused_naming_the_metric(bad: float) -> None:
    recorder = Recorder()
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    with pytest.raises(ValueError, match=r"swarm\.online"):
        recorder.sample("swarm.online", 1.0, bad)
    with pytest.raises(ValueError, match=r"dht\.get_latency"):
        recorder.observe("dht.get_latency", 1.0, bad)
    with pytest.raises(ValueError, match=r"swarm\.online"):
        recorder.sample("swarm.online", bad, 1.0)
    assert recorder.series("swarm.online") == {}


def test_declare_is_idempotent_and_conflicts_are_loud() -> None:
    recorder = Recorder()
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    recorder.declare("swarm.online", unit="peers", title="Peers online", kind="gauge")
    assert recorder.names() == ["swarm.online"]
    with pytest.raises(ValueError, match="already declared"):
        recorder.declare("swarm.online", unit="hosts", title="Peers online")
    with pytest.raises(ValueError, match="already declared"):
        recorder.declare("swarm.online", unit="peers", title="Peers online", kind="counter")
    with pytest.raises(ValueError, match="kind"):
        recorder.declare("swarm.other", unit="peers", title="x", kind="histogram")
    for bad_name in ("Swarm.online", "swarm-online", "swarm/online", "", "swarm..online"):
        with pytest.raises(ValueError, match="metric name"):
            recorder.declare(bad_name, unit="peers", title="x")
    with pytest.raises(KeyError, match=r"never\.declared"):
        recorder.sample("never.declared", 1.0, 1.0)
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    with pytest.raises(ValueError, match="observe"):
        recorder.sample("dht.get_latency", 1.0, 1.0)
    with pytest.raises(ValueError, match="sample"):
        recorder.observe("swarm.online", 1.0, 1.0)


def test_buckets_turn_events_into_a_time_series() -> None:
    recorder = Recorder(interval=10.0)
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    for i in range(1, 101):  # bucket [0, 10): 1..100
        recorder.observe("dht.get_latency", 9.99 * i / 100, float(i))
    recorder.observe("dht.get_latency", 35.0, 7.0)  # bucket [30, 40); [10, 30) is empty
    recorder.observe("dht.get_latency", 10.0, 2.0, label="b")  # a bucket starts at its left edge
    buckets = recorder.buckets("dht.get_latency")
    assert buckets[""] == [
        Bucket(start=0.0, count=100, mean=50.5, p50=50.5, p99=pytest.approx(99.01)),
        Bucket(start=30.0, count=1, mean=7.0, p50=7.0, p99=7.0),
    ]
    assert buckets["b"] == [Bucket(start=10.0, count=1, mean=2.0, p50=2.0, p99=2.0)]
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    with pytest.raises(ValueError, match="events"):
        recorder.buckets("swarm.online")


def test_to_json_holds_everything_and_serializes() -> None:
    recorder = Recorder()
    recorder.declare("rpc.sent", unit="requests", title="Requests sent", kind="counter")
    recorder.sample("rpc.sent", 1.0, 3.0, label="a")
    recorder.sample("rpc.sent", 2.0, 5.0, label="a")
    data = json.loads(json.dumps(recorder.to_json()))
    assert data == {
        "rpc.sent": {
            "unit": "requests",
            "title": "Requests sent",
            "kind": "counter",
            "series": {"a": [[1.0, 3.0], [2.0, 5.0]]},
        }
    }


def test_many_events_are_cheap() -> None:
    recorder = Recorder()
    recorder.declare("rpc.latency", unit="s", title="RPC latency", kind="events")
    for i in range(200_000):
        recorder.observe("rpc.latency", i * 0.001, (i % 1000) / 1000)
    times, values = recorder.arrays("rpc.latency")
    assert (times.typecode, values.typecode, len(values)) == ("d", "d", 200_000)
    assert recorder.summary()["rpc.latency"][""]["p50"] == pytest.approx(0.4995)
    assert len(recorder.buckets("rpc.latency")[""]) == 20


# --- report --------------------------------------------------------------------------------------


def _filled_recorder() -> Recorder:
    recorder = Recorder(warmup=20.0, interval=10.0)
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    recorder.declare("rpc.sent", unit="requests", title="Requests sent", kind="counter")
    recorder.declare("dht.get_latency", unit="s", title="DHT get latency", kind="events")
    recorder.declare("rpc.success", unit="share", title="Successful calls", kind="events")
    recorder.declare("expert.queue", unit="requests", title="Expert queue length")  # never sampled
    for t in range(0, 121, 5):
        recorder.sample("swarm.online", t, 50 + t % 7, label="region-a")
        recorder.sample("swarm.online", t, 40 + t % 3, label="region-b")
        recorder.sample("rpc.sent", t, 3 * t)
    for i in range(1200):
        t = i / 10
        recorder.observe("dht.get_latency", t, 0.05 + (i % 100) / 1000)
        recorder.observe("rpc.success", t, 0.0 if i % 20 == 0 else 1.0)
    return recorder


def _write(tmp_path: Path, recorder: Recorder, *, complete: bool = True) -> ReportFiles:
    return write_report(
        tmp_path / "out" / "run1",
        scenario_name="smoke",
        resolved_scenario={"name": "smoke", "duration": 120.0, "groups": [{"count": 50}]},
        seed=7,
        trace_hash="0123abcd",
        recorder=recorder,
        complete=complete,
        wall_seconds=3.25,
        virtual_seconds=120.0 if complete else 95.5,
        notes=["a note", "another note"],
    )


def test_write_report_writes_json_plots_and_markdown(tmp_path: Path) -> None:
    recorder = _filled_recorder()
    files = _write(tmp_path, recorder)
    out = tmp_path / "out" / "run1"
    assert files.json == out / "report.json" and files.markdown == out / "report.md"
    assert [path.name for path in files.plots] == [
        "swarm-online.png",
        "rpc-sent.png",
        "dht-get_latency.png",
        "rpc-success.png",
        "expert-queue.png",
    ]

    report = json.loads(files.json.read_text())
    assert list(report) == [
        "scenario",
        "seed",
        "trace_hash",
        "complete",
        "wall_s",
        "virtual_s",
        "versions",
        "scenario_resolved",
        "summary",
        "metrics",
        "notes",
    ]
    assert (report["scenario"], report["seed"], report["trace_hash"]) == ("smoke", 7, "0123abcd")
    assert (report["complete"], report["wall_s"], report["virtual_s"]) == (True, 3.25, 120.0)
    assert report["summary"] == json.loads(json.dumps(recorder.summary()))
    assert report["summary"]["rpc.sent"][""]["total"] == 300  # 360 at t=120 - 60 at t=20
    assert report["metrics"]["dht.get_latency"]["kind"] == "events"
    assert len(report["metrics"]["dht.get_latency"]["series"][""]) == 1200
    assert report["scenario_resolved"]["groups"] == [{"count": 50}]
    assert set(report["versions"]) == {
        "python",
        "tesseract",
        "torch",
        "trio",
        "msgspec",
        "networkx",
        "matplotlib",
    }
    assert report["versions"]["matplotlib"]
    assert report["notes"] == ["a note", "another note"]

    for path in files.plots:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, path
        assert len(data) > 10_000, path  # axes, text and lines, not an empty canvas
        width, height = struct.unpack(">II", data[16:24])  # IHDR: 8 x 4.5 in at 100 dpi
        assert (width, height) == (800, 450), path

    markdown = files.markdown.read_text()
    assert markdown.startswith("# Scenario smoke, seed 7\n")
    assert "INCOMPLETE" not in markdown and "Complete" in markdown
    assert "`0123abcd`" in markdown
    summary = recorder.summary()
    mean = format_number(summary["dht.get_latency"][""]["mean"])
    p50 = format_number(summary["dht.get_latency"][""]["p50"])
    for row_start in (
        "| swarm.online | region-a | peers |",
        "| swarm.online | region-b | peers |",
        "| rpc.sent |  | requests |",
        f"| dht.get_latency |  | s | 1000 | {mean} | {p50} |",
        "| rpc.success |  | share | 1000 | 0.95 |",
        "| expert.queue |  | requests | - |",
    ):
        assert row_start in markdown, row_start
    for title, file_name in [
        ("Peers online", "swarm-online.png"),
        ("DHT get latency", "dht-get_latency.png"),
        ("Expert queue length", "expert-queue.png"),
    ]:
        assert f"![{title}]({file_name})" in markdown
    assert "- a note\n- another note\n" in markdown


def test_incomplete_report_says_so(tmp_path: Path) -> None:
    files = _write(tmp_path, _filled_recorder(), complete=False)
    markdown = files.markdown.read_text()
    assert "INCOMPLETE (stopped at virtual time 95.5 s)" in markdown
    assert json.loads(files.json.read_text())["complete"] is False


def test_long_runs_plot_in_minutes_or_hours() -> None:
    recorder = Recorder()
    recorder.declare("swarm.online", unit="peers", title="Peers online")
    recorder.sample("swarm.online", 0.0, 1.0)
    for virtual_seconds, label in [(300.0, "virtual time (s)"), (1800.0, "virtual time (min)")]:
        assert report_module._plot(recorder, "swarm.online", virtual_seconds).axes[0].get_xlabel() == label
    figure = report_module._plot(recorder, "swarm.online", 10 * 3600.0)
    assert figure.axes[0].get_xlabel() == "virtual time (h)"
    assert figure.axes[0].get_xlim() == (0.0, 10.0)


def test_summary_table_aligns_its_columns() -> None:
    table = summary_table(_filled_recorder())
    lines = table.splitlines()
    header, rule, rows = lines[0], lines[1], lines[2:]
    assert header.split() == [
        "metric",
        "label",
        "unit",
        "count",
        "mean",
        "p50",
        "p99",
        "last",
        "min",
        "max",
        "total",
        "rate/s",
    ]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 6
    # Figures are right-aligned under their header.
    p50_end = header.index("p50") + len("p50")
    latency = next(row for row in rows if row.startswith("dht.get_latency"))
    assert latency[:p50_end].split()[-1] == latency[:p50_end].rsplit(" ", 1)[-1]
    assert latency[p50_end : p50_end + 1] == " "
    assert latency[:p50_end].endswith(
        format_number(_filled_recorder().summary()["dht.get_latency"][""]["p50"])
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (12, "12"),
        (1234.0, "1234"),
        (1234.56, "1235"),
        (12.345, "12.3"),
        (1.2345, "1.23"),
        (0.012345, "0.0123"),
        (0.00001234, "1.23e-05"),
        (12_345_678.9, "1.23e+07"),
        (-2.5, "-2.50"),
    ],
)
def test_format_number_is_compact(value: float, text: str) -> None:
    assert format_number(value) == text
