"""Every scenario in scenarios/ runs, at its reduced ``smoke`` size, into a complete report; one seed
gives one trace hash, another seed another. The full sizes are checked to be valid here and run by the
benchmarks (docs/benchmarks.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulator.command import run_and_report
from simulator.scenario.load import load_scenario
from simulator.scenario.report import against_file_name, plot_file_name

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
SHIPPED = {"quickstart", "volunteers", "dht-churn-10k", "partition-heal", "server-crash"}


def test_the_issue_s_scenarios_all_ship() -> None:
    assert {path.stem for path in SCENARIOS} >= SHIPPED


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_shipped_scenario_opens_with_its_question_and_its_cost(path: Path) -> None:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = " ".join(header)
    assert "?" in text, "the opening comment says which question the scenario answers"
    assert re.search(r"[Tt]akes (about|up to) \d+", text), "and how long it takes here"
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert "smoke" in scenario.profiles


def _run(
    path: Path, out: Path, capsys: pytest.CaptureFixture[str], seed: int | None = None
) -> tuple[str, dict]:
    overrides = [f"seed={seed}"] if seed is not None else []
    scenario = load_scenario(path, profile="smoke", overrides=overrides)
    code = run_and_report(scenario, path.parent, out, progress=False)
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0, printed[-3:]
    assert printed[-1].startswith("trace-hash: "), "the trace hash is the last line printed"
    return printed[-1].removeprefix("trace-hash: "), json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_shipped_scenario_runs_into_a_report_and_its_seed_fixes_its_trace(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, report = _run(path, tmp_path / "a", capsys)
    assert report["complete"] and report["trace_hash"] == first
    assert report["scenario_resolved"]["duration"] > 0
    metrics = report["metrics"]
    assert metrics["live.members"]["series"], "live members per group"
    assert any(metrics["dht.get_success"]["series"].values()), "the DHT probe read records"
    summary = report["summary"]
    assert summary["dht.get_success"][""]["mean"] >= 0.9
    for name in metrics:
        plot = tmp_path / "a" / plot_file_name(name)
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    markdown = (tmp_path / "a" / "report.md").read_text()
    assert first in markdown and "![" in markdown
    if any(group["role"] == "trainer" for group in report["scenario_resolved"]["groups"]):
        assert any(metrics["train.loss"]["series"].values()), "trainers trained"
        if any(metrics["train.accuracy"]["series"].values()):  # and one plot against their steps
            plot = tmp_path / "a" / against_file_name("train.accuracy", "train.updates")
            assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again, _ = _run(path, tmp_path / "b", capsys)
    assert again == first, "one scenario and seed, one trace"
    other, _ = _run(path, tmp_path / "c", capsys, seed=report["seed"] + 1)
    assert other != first, "another seed, another trace"
