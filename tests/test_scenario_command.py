"""`tesseract sim` as a user runs it: a sweep over a parameter, Ctrl+C in the middle of a run, and a
run that deadlocks. Real processes, real scenario runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from simulator.scenario.load import load_scenario
from simulator.scenario.runner import ScenarioRun

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A small DHT swarm that a DHT probe reads from: enough to see latency move with the links.
_SWARM = """
name: swarm
duration: {duration}
network: {{latency: "20 ms"}}
groups:
  - {{name: peers, role: dht, count: 12, start: {{ramp: "2 s"}}}}
metrics: {{interval: "5 s", record: [live, dht], probe: {{keys: 4, rate: 5}}}}
"""


def _scenario(tmp_path: Path, duration: str) -> Path:
    file = tmp_path / "swarm.yaml"
    file.write_text(_SWARM.format(duration=duration))
    return file


def _sim(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tesseract", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def test_a_sweep_runs_each_value_and_plots_each_metric_against_it(tmp_path: Path) -> None:
    scenario, out = _scenario(tmp_path, "40 s"), tmp_path / "sweep"
    process = _sim(
        "sweep", str(scenario), "--param", "network.latency=10 ms,80 ms", "--jobs", "2", "--out", str(out)
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout + stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["parameter"] == "network.latency"
    latency = dict(sweep["metrics"]["dht.get_latency"][""])
    assert set(latency) == {"10 ms", "80 ms"}
    assert latency["80 ms"] > 4 * latency["10 ms"]  # each point ran with its own value
    for point in ("point-00", "point-01"):
        assert json.loads((out / point / "report.json").read_text())["complete"] is True
    plot = out / "sweep-dht-get_latency.png"
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_a_sweep_runs_its_points_from_the_file_as_it_was_when_it_started(tmp_path: Path) -> None:
    """Editing the file while a sweep runs changes none of its points: they run from a copy, whose
    relative paths (here a churn trace) still start from the file's own folder."""
    scenario, out = _scenario(tmp_path, "20 s"), tmp_path / "sweep"
    (tmp_path / "sessions.csv").write_text("".join(f"{i},0 s,30 s\n" for i in range(12)))
    text = scenario.read_text().replace('start: {ramp: "2 s"}', "churn: {trace: sessions.csv}")
    assert "sessions.csv" in text
    scenario.write_text(text)
    process = _sim("sweep", str(scenario), "--param", "seed=1,2", "--jobs", "1", "--out", str(out))
    deadline = time.monotonic() + 60
    while not (out / "point-00").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    scenario.write_text("duration: [not, a, duration]\n")  # the user edits it, badly
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout + stderr
    for point in ("point-00", "point-01"):  # the second started after the edit
        report = json.loads((out / point / "report.json").read_text())
        assert report["complete"] is True and report["scenario_resolved"]["duration"] == 20.0


def test_a_sweep_with_a_bad_value_runs_nothing(tmp_path: Path) -> None:
    scenario, out = _scenario(tmp_path, "40 s"), tmp_path / "sweep"
    process = _sim("sweep", str(scenario), "--param", "network.latency=10 ms,fast", "--out", str(out))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.startswith(f"error: {scenario}: network.latency: ") and len(stderr.splitlines()) == 1
    assert not out.exists()


def test_ctrl_c_stops_the_run_and_still_writes_the_report_marked_incomplete(tmp_path: Path) -> None:
    scenario, out = _scenario(tmp_path, "2 h"), tmp_path / "run"
    process = _sim("run", str(scenario), "--out", str(out))
    assert process.stderr is not None
    seen, deadline = "", time.monotonic() + 120
    while "live]" not in seen.rpartition("virtual time:")[2]:  # the bar has moved: the swarm runs
        assert process.poll() is None and time.monotonic() < deadline, seen
        seen += process.stderr.read(1)
    os.kill(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, seen + stderr
    assert "Traceback" not in stderr
    lines = stdout.strip().splitlines()
    assert "INCOMPLETE (interrupted)" in lines[-2]
    assert lines[-1].startswith("trace-hash: ")
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False
    assert 0 < report["virtual_s"] < 7_200
    assert report["metrics"]["live.members"]["series"]["peers"]  # what it measured is kept
    assert "incomplete" in (out / "report.md").read_text().lower()


def test_a_run_that_deadlocks_ends_with_an_error_naming_the_virtual_time(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path, "60 s"))
    run = ScenarioRun(scenario, base_dir=tmp_path, work_dir=tmp_path, progress=False)

    async def stuck(network) -> None:
        await trio.sleep(7.5)
        await trio.Event().wait()  # nobody will ever set it, and no timer is left

    run._main = stuck  # type: ignore[method-assign]
    result = run.run()
    assert not result.complete
    assert result.error is not None and "at virtual time 7.5" in result.error
    assert result.virtual_seconds == 7.5
