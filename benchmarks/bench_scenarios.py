"""Scenario benchmark: the shipped scenarios that carry targets, each run as `tesseract sim run`.

| scenario            | targets (issue 10)                                                        |
| quickstart          | under a minute of wall time; every trainer group's test accuracy >= 0.90  |
| partition-heal      | both sides train during the split; DHT get success >= 99% again within    |
|                     | five virtual minutes of the heal                                          |
| dht-churn-10k       | one virtual hour in at most 10 minutes and 8 GiB; get success >= 99%      |

Each run is a child process, so its wall time and peak resident memory are its own. The baseline, in
the same run: the simulator's bare datagram RPC (1,000 hosts calling random peers), against which a
scenario's message rate reads as the cost of everything above the wire (DHT logic, metrics).

Usage: python benchmarks/bench_scenarios.py [quickstart partition-heal dht-churn-10k] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_net import bench_simulator
from report import report

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("quickstart", "partition-heal", "dht-churn-10k")
#: DHT get success must be back at 99% within this long after the heal.
RECOVERY_TARGET_S = 300.0


def run_scenario(name: str, out: Path) -> dict[str, Any]:
    """Run one scenario in a child process: its wall time, peak memory and report."""
    command = [sys.executable, "-m", "tesseract", "sim", "run", str(ROOT / "scenarios" / f"{name}.yaml")]
    command += ["--out", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{name}: exit status {child.returncode}\n{output}")
    data = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "report": data}


def last(series: list[list[float]]) -> float:
    return series[-1][1] if series else float("nan")


def messages(data: dict[str, Any]) -> float:
    """Messages sent by every group over the whole run."""
    return sum(last(points) for points in data["metrics"]["traffic.messages"]["series"].values())


def quickstart(run: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    data = run["report"]
    accuracy = {group: last(points) for group, points in data["metrics"]["train.accuracy"]["series"].items()}
    rows = [("wall seconds", f"{run['wall_s']:.1f}", "< 60")]
    rows += [(f"test accuracy ({group})", f"{value:.3f}", ">= 0.90") for group, value in accuracy.items()]
    passed = run["wall_s"] < 60 and all(value >= 0.9 for value in accuracy.values())
    return rows, {"accuracy": accuracy, "passed": passed}


def partition_heal(run: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    data = run["report"]
    fault = data["scenario_resolved"]["faults"][0]
    split, heal, end = fault["at"], fault["at"] + fault["for"], data["virtual_s"]
    trained: dict[str, float] = {}
    for group, points in data["metrics"]["train.samples"]["series"].items():
        during = [value for t, value in points if split <= t <= heal]
        trained[group] = (during[-1] - during[0]) if len(during) > 1 else 0.0
    gets = data["metrics"]["dht.get_success"]["series"][""]
    recovered_after = None
    for offset in range(0, int(end - heal), 10):  # the first moment from which every get succeeds at 99%
        later = [ok for t, ok in gets if t >= heal + offset]
        if later and sum(later) / len(later) >= 0.99:
            recovered_after = float(offset)
            break
    rows = [(f"samples during the split ({group})", f"{n:.0f}", "> 0") for group, n in trained.items()]
    during = [ok for t, ok in gets if split <= t < heal]
    rows.append(("get success during the split", f"{sum(during) / max(1, len(during)):.3f}", ""))
    shown = "never" if recovered_after is None else f"{recovered_after:.0f}"
    rows.append(("get success >= 0.99 from (s after heal)", shown, f"<= {RECOVERY_TARGET_S:.0f}"))
    rows.append(("wall seconds", f"{run['wall_s']:.1f}", ""))
    passed = all(value > 0 for value in trained.values()) and (
        recovered_after is not None and recovered_after <= RECOVERY_TARGET_S
    )
    return rows, {"trained_during_split": trained, "recovered_after_s": recovered_after, "passed": passed}


def dht_churn(run: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    data = run["report"]
    summary = data["summary"]
    success = summary["dht.get_success"][""]
    latency = summary["dht.get_latency"][""]
    live = summary["live.members"]["peers"]
    gib = run["peak_rss_bytes"] / 2**30
    rows = [
        ("wall seconds (1 virtual hour)", f"{run['wall_s']:.0f}", "<= 600"),
        ("peak resident memory (GiB)", f"{gib:.2f}", "<= 8"),
        ("get success", f"{success['mean']:.4f} ({success['count']} gets)", ">= 0.99"),
        ("get latency p50 / p99 (virtual s)", f"{latency['p50']:.3f} / {latency['p99']:.3f}", ""),
        ("live nodes min / mean / max", f"{live['min']:.0f} / {live['mean']:.0f} / {live['max']:.0f}", ""),
        ("messages per wall second", f"{messages(data) / run['wall_s']:,.0f}", ""),
    ]
    passed = run["wall_s"] <= 600 and gib <= 8 and success["mean"] >= 0.99
    return rows, {"get_success": success["mean"], "gib": gib, "passed": passed}


CHECKS = {"quickstart": quickstart, "partition-heal": partition_heal, "dht-churn-10k": dht_churn}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    options = parser.parse_args()
    options.scenarios = options.scenarios or list(SCENARIOS)
    for name in options.scenarios:
        if name not in SCENARIOS:
            parser.error(f"no benchmark for scenario {name!r} (choose from {', '.join(SCENARIOS)})")

    baseline = bench_simulator(1000, 5.0, "datagram")
    results: dict[str, Any] = {"bare_datagram_messages_per_s": baseline["messages_per_s"]}
    rows = [("bare sim datagram RPC (messages / wall s)", f"{baseline['messages_per_s']:,.0f}", "baseline")]
    with tempfile.TemporaryDirectory() as folder:
        for name in options.scenarios:
            run = run_scenario(name, Path(folder) / name)
            checked, result = CHECKS[name](run)
            rate = messages(run["report"]) / run["wall_s"]
            result.update(
                wall_s=run["wall_s"],
                peak_rss_bytes=run["peak_rss_bytes"],
                messages_per_wall_s=rate,
                trace_hash=run["report"]["trace_hash"],
            )
            results[name] = result
            rows.append((f"== {name}", "PASS" if result["passed"] else "FAIL", ""))
            rows += [(f"  {measure}", value, target) for measure, value, target in checked]
            rows.append(("  messages / wall s vs bare RPC", f"{rate / baseline['messages_per_s']:.2f}", ""))
    report("scenarios (tesseract sim run)", rows, results, options.json)
    if not all(results[name]["passed"] for name in options.scenarios):
        sys.exit(1)


if __name__ == "__main__":
    main()
