"""``tesseract swarm --local``: a whole swarm on this machine, training on the bundled digits.

It starts a DHT bootstrap node, expert servers sharing the grid, and a trainer, each a separate
process on loopback; the trainer's progress is printed here, the servers' output goes to
``--log-file``. At the end (or on Ctrl+C) every process is stopped, servers saving their experts.
With ``--json FILE``: ``final_test_accuracy``, ``steps``, ``samples_per_s``, ``failed_calls``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tesseract.train.options import add_mixture_arguments, add_training_arguments

    parser.add_argument("--local", action="store_true", help="run every process on this machine (required)")
    parser.add_argument("--servers", type=int, default=4, help="expert server processes")
    parser.add_argument(
        "--trainers",
        type=int,
        default=1,
        help="trainer processes (seeds SEED, SEED+1, ...); with --average-every they train one model",
    )
    parser.add_argument("--expert-cls", default="ffn")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of expert calls the servers fail"
    )
    parser.add_argument("--update-period", type=float, default=10.0, help="servers' DHT announcement period")
    parser.add_argument("--log-file", type=Path, default=None, help="servers' output (default: discarded)")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="servers restore their experts from here and save them periodically and on exit",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the run's summary here")
    add_mixture_arguments(parser)
    add_training_arguments(parser)


def trainer_arguments(options: argparse.Namespace, summary: Path) -> list[str]:
    """The trainer's command line: this swarm's mixture and training settings, handed on."""
    from tesseract.train.options import add_mixture_arguments, add_training_arguments, as_command_line

    same_settings = argparse.ArgumentParser(add_help=False)
    actions = [*add_mixture_arguments(same_settings), *add_training_arguments(same_settings)]
    return [*as_command_line(actions, options), "--json", str(summary)]


def parameter_disagreement(paths: list[Path]) -> float:
    """How far the trainers' own parameters are apart: max |p_i - mean| / |mean| (L2 norms)."""
    import numpy

    vectors = numpy.stack([numpy.load(path, allow_pickle=False) for path in paths]).astype(numpy.float64)
    mean = vectors.mean(axis=0)
    scale = float(numpy.linalg.norm(mean)) or 1.0
    return float(max(numpy.linalg.norm(vector - mean) for vector in vectors) / scale)


def settings_problem(options: argparse.Namespace) -> str | None:
    """What is wrong with the settings, found before any process starts (None: nothing)."""
    if not options.grid or any(size < 1 for size in options.grid):
        return f"--grid needs positive sizes, got {options.grid}"
    if options.servers < 1:
        return f"--servers must be at least 1, got {options.servers}"
    if options.trainers < 1:
        return f"--trainers must be at least 1, got {options.trainers}"
    if not 0.0 <= options.fault_rate <= 1.0:
        return f"--fault-rate must be within [0, 1], got {options.fault_rate}"
    if options.dataset != "digits":
        directory = options.dataset.partition(":")[2] if options.dataset.startswith("mnist:") else None
        if directory is None:
            return f"unknown data set {options.dataset!r}: use 'digits' or 'mnist:DIRECTORY'"
        if not Path(directory).is_dir():
            return f"{directory} is not a directory of MNIST IDX files"
    return None


def run(options: argparse.Namespace) -> int:
    from tesseract.launch import LocalSwarm, NodeProcessError

    if not options.local:
        print("error: only --local is supported; deploy/ runs a swarm over many machines", file=sys.stderr)
        return 2
    problem = settings_problem(options)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tesseract-swarm-")))
        log = stack.enter_context(open(options.log_file, "a")) if options.log_file else None
        experts = math.prod(options.grid)
        print(
            f"local swarm: 1 DHT node, {options.servers} servers with {experts} {options.expert_cls} experts "
            f"(grid {'x'.join(map(str, options.grid))}, hidden {options.hidden_dim}), "
            f"{options.trainers} trainer{'s' if options.trainers > 1 else ''}",
            flush=True,
        )
        try:
            swarm = stack.enter_context(
                LocalSwarm(
                    servers=options.servers,
                    grid=options.grid,
                    uid_prefix=options.uid_prefix,
                    expert_cls=options.expert_cls,
                    hidden_dim=options.hidden_dim,
                    fault_rate=options.fault_rate,
                    seed=options.seed,
                    update_period=options.update_period,
                    log=log,
                    checkpoint_dir=options.checkpoint_dir,
                )
            )
        except (ValueError, NodeProcessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        servers = ", ".join(server.address for server in swarm.servers)
        print(f"DHT bootstrap at {swarm.bootstrap.address}; servers at {servers}", flush=True)
        runs = [
            [
                *trainer_arguments(options, workdir / f"trainer-{index}.json"),
                *["--seed", str(options.seed + index)],
                *["--save-parameters", str(workdir / f"parameters-{index}.npy")],
            ]
            for index in range(options.trainers)
        ]
        try:
            codes = swarm.train_together(runs)
        except KeyboardInterrupt:
            print("interrupted: stopping the swarm", flush=True)
            return 130
        for index, code in enumerate(codes):
            if code != 0 or not (workdir / f"trainer-{index}.json").exists():
                print(f"error: trainer {index} exited with code {code}", file=sys.stderr)
                return code or 1
        trainers = [json.loads((workdir / f"trainer-{i}.json").read_text()) for i in range(options.trainers)]
        disagreement = parameter_disagreement(
            [workdir / f"parameters-{i}.npy" for i in range(options.trainers)]
        )
    trainer = trainers[0]
    summary = {
        "final_test_accuracy": trainer["final_test_accuracy"],
        "steps": trainer["steps"],
        "samples_per_s": trainer["samples_per_s"],
        "failed_calls": trainer["failed_calls"],
        "expert_calls": trainer["expert_calls"],
        "failed_steps": trainer["failed_steps"],
        "test_accuracy_per_epoch": trainer["test_accuracy_per_epoch"],
        "trainers": [
            {key: t[key] for key in ("final_test_accuracy", "steps", "samples_per_s", "averaging")}
            for t in trainers
        ],
        #: max over trainers of |p_i - mean| / |mean|: near 0 when they train one model, about 1 for
        #: trainers that never met.
        "parameter_disagreement": disagreement,
        "parameters": {
            "servers": options.servers,
            "trainers": options.trainers,
            "grid": options.grid,
            "hidden_dim": options.hidden_dim,
            "k_best": options.k_best,
            "fault_rate": options.fault_rate,
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "average_every": options.average_every,
        },
    }
    if options.trainers > 1:
        accuracies = ", ".join(f"{t['final_test_accuracy']:.4f}" for t in trainers)
        print(
            f"trainers' test accuracy: {accuracies}; their parameters disagree by "
            f"{disagreement:.4f} (relative)",
            flush=True,
        )
    print(
        f"swarm summary: test accuracy {summary['final_test_accuracy']:.4f}, {summary['steps']} steps, "
        f"{summary['samples_per_s']:.0f} samples/s, {summary['failed_calls']} failed expert calls; "
        "all processes stopped",
        flush=True,
    )
    if options.json is not None:
        options.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
