"""``tesseract sim``: run a scenario file in the simulator and write its report.

    tesseract sim validate SCENARIO
    tesseract sim run SCENARIO [--seed N] [--out DIR] [--profile NAME] [--set PATH=VALUE ...]
    tesseract sim sweep SCENARIO --param PATH=V1,V2,... [--jobs N]

A scenario that cannot run gets one line (file, field path, reason) and exit status 2; nothing starts.
A run prints a progress bar in virtual time, the summary table, and last ``trace-hash: HEX``; Ctrl+C
stops it at once and still writes the report, marked incomplete.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a scenario file and print what it describes")
    _common(validate)
    run = actions.add_parser("run", help="run a scenario and write its report")
    _common(run)
    run.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    run.add_argument("--out", type=Path, default=None, help="report folder (default runs/NAME-SEED)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="where the file's relative paths (data sets, traces) start (default: the file's folder)",
    )
    sweep = actions.add_parser("sweep", help="run a scenario for each value of a parameter, in parallel")
    _common(sweep)
    sweep.add_argument(
        "--param",
        default=None,
        help="PATH=V1,V2,... (e.g. network.latency='10 ms,50 ms'); default: the file's sweep section",
    )
    sweep.add_argument("--seed", type=int, default=None)
    sweep.add_argument("--jobs", type=int, default=2, help="runs at once (processes)")
    sweep.add_argument("--out", type=Path, default=None, help="folder of the sweep (default runs/NAME-sweep)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    parser.add_argument("--profile", default=None, help="apply a profile of the file (e.g. smoke)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE", help="override a field"
    )


def run(options: argparse.Namespace) -> int:
    from simulator.scenario.errors import ScenarioError
    from simulator.scenario.load import load_scenario

    overrides = list(options.overrides)
    if getattr(options, "seed", None) is not None:
        overrides.append(f"seed={options.seed}")
    if options.sim_command == "sweep":
        return _sweep(options, overrides)
    base_dir = getattr(options, "base_dir", None) or options.scenario.parent
    try:
        scenario = load_scenario(
            options.scenario, profile=options.profile, overrides=overrides, base_dir=base_dir
        )
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if options.sim_command == "validate":
        print(describe(scenario))
        return 0
    out = options.out or Path("runs") / f"{scenario.name}-{scenario.seed}"
    return run_and_report(scenario, base_dir, out, progress=not options.no_progress)


def describe(scenario) -> str:
    from simulator.scenario.units import format_duration

    groups = ", ".join(f"{g.count} {g.name} ({g.role})" for g in scenario.groups)
    duration, warmup = format_duration(scenario.duration), format_duration(scenario.warmup)
    lines = [
        f"{scenario.name}: valid",
        f"  {duration} of virtual time (warm-up {warmup}), seed {scenario.seed}",
        f"  groups: {groups}",
        f"  faults: {len(scenario.faults)}; metrics every {format_duration(scenario.metrics.interval)}",
    ]
    return "\n".join(lines)


def run_and_report(scenario, base_dir: Path, out: Path, *, progress: bool) -> int:
    from simulator.scenario.report import summary_table, write_report
    from simulator.scenario.runner import ScenarioRun
    from simulator.scenario.schema import resolved

    out.mkdir(parents=True, exist_ok=True)
    # The nodes' log lines (a trainer skipping a step, a server restoring) go to the run's log, not
    # over the progress bar.
    log = logging.FileHandler(out / "run.log", mode="w")
    log.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(log)
    try:
        with tempfile.TemporaryDirectory(prefix="tesseract-sim-") as work:
            runner = ScenarioRun(scenario, base_dir=base_dir, work_dir=Path(work), progress=progress)
            result = runner.run()
    finally:
        root.removeHandler(log)
        log.close()
    notes = list(result.notes)
    if result.error is not None:
        notes.append(f"stopped: {result.error}")
    files = write_report(
        out,
        scenario_name=scenario.name,
        resolved_scenario=resolved(scenario),
        seed=scenario.seed,
        trace_hash=result.trace_hash,
        recorder=runner.recorder,
        complete=result.complete,
        wall_seconds=result.wall_seconds,
        virtual_seconds=result.virtual_seconds,
        notes=notes,
    )
    print(summary_table(runner.recorder))
    status = "complete" if result.complete else f"INCOMPLETE ({result.error})"
    print(
        f"{status}: {result.virtual_seconds:.0f} virtual s in {result.wall_seconds:.0f} wall s; "
        f"report in {files.markdown}"
    )
    print(f"trace-hash: {result.trace_hash}")
    if result.error == "interrupted":
        return 130
    return 0 if result.complete else 1


def _sweep(options: argparse.Namespace, overrides: list[str]) -> int:
    import shutil
    import subprocess
    import time

    from simulator.scenario.errors import ScenarioError
    from simulator.scenario.load import load_scenario

    points = []
    base_dir = options.scenario.parent
    try:
        if options.param is None:
            base = load_scenario(options.scenario, profile=options.profile, overrides=overrides)
            if base.sweep is None:
                print(
                    f"error: {options.scenario} has no sweep section: give --param PATH=V1,V2,...",
                    file=sys.stderr,
                )
                return 2
            path, values = base.sweep.param, [str(v) for v in base.sweep.values]
        else:
            path, sep, values_text = options.param.partition("=")
            values = [v.strip() for v in values_text.split(",") if v.strip()]
            if not sep or not values:
                print(f"error: --param takes PATH=V1,V2,..., got {options.param!r}", file=sys.stderr)
                return 2
        for value in values:  # every point must be valid before any runs
            point_overrides = [*overrides, f"{path}={value}"]
            scenario = load_scenario(options.scenario, profile=options.profile, overrides=point_overrides)
            points.append((value, point_overrides, scenario))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = points[0][2].name
    out = options.out or Path("runs") / f"{name}-sweep"
    # The points run from a copy, taken now: a file edited while a long sweep runs must not change
    # its later points. In a folder of its own, so that it can never be the file itself.
    snapshot = out / "scenario" / options.scenario.name
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(options.scenario, snapshot)
    running: list[tuple[str, Path, subprocess.Popen]] = []
    failed = 0
    pending = list(points)
    jobs = max(1, options.jobs)
    while pending or running:
        while pending and len(running) < jobs:
            value, point_overrides, _ = pending.pop(0)
            folder = out / f"point-{len(points) - len(pending) - 1:02d}"
            command = [sys.executable, "-m", "tesseract", "sim", "run", str(snapshot)]
            command += ["--base-dir", str(base_dir), "--out", str(folder), "--no-progress"]
            command += ["--profile", options.profile] if options.profile else []
            for item in point_overrides:
                command += ["--set", item]
            log = open(folder.with_suffix(".log"), "w")  # noqa: SIM115 - closed when the process ends
            running.append((value, folder, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {path}={value} -> {folder}", flush=True)
        while not (done := [entry for entry in running if entry[2].poll() is not None]):
            time.sleep(0.2)  # whichever ends first frees its slot: points differ in cost
        for entry in done:
            running.remove(entry)
            value, folder, process = entry
            failed += process.returncode != 0
            print(f"finished {path}={value}: exit {process.returncode}", flush=True)
    summaries = []
    for index, (value, _, _) in enumerate(points):
        report = out / f"point-{index:02d}" / "report.json"
        if report.exists():
            summaries.append((value, json.loads(report.read_text())))
    from simulator.scenario.sweep import plot_sweep

    files = plot_sweep(out, path, summaries)
    print(f"sweep of {path} over {len(points)} values: {len(files)} plots in {out}")
    kept = json.loads((out / "sweep.json").read_text())["kept"]
    for name, value in kept.get("train.throughput", {}).items():
        print(f"{name}: {value:.3f} (train.throughput)")
    return 1 if failed else 0


__all__ = ["add_arguments", "describe", "run", "run_and_report"]
