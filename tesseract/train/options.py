"""``tesseract train`` options: torch-free, so building the CLI stays fast.

``tesseract swarm`` takes the same mixture and training settings and hands them on to the trainer
process it starts: ``as_command_line`` turns the parsed values back into flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    swarm = parser.add_argument_group("swarm")
    swarm.add_argument("--initial-peers", nargs="+", required=True, metavar="ADDR", help="DHT peers to join")
    swarm.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT of this trainer's DHT node")
    swarm.add_argument(
        "--wait-for-experts", type=int, default=1, help="live experts to wait for before training"
    )
    swarm.add_argument("--wait-timeout", type=float, default=60.0)
    add_mixture_arguments(parser)
    add_training_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the final summary here")
    parser.add_argument(
        "--save-parameters",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the model's own parameters at the end, as one flat float32 .npy vector",
    )


def add_mixture_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    mixture = parser.add_argument_group("mixture of experts")
    return [
        mixture.add_argument("--uid-prefix", default="ffn"),
        mixture.add_argument(
            "--grid", type=int, nargs="+", default=[4, 8], metavar="SIZE", help="grid size per dimension"
        ),
        mixture.add_argument(
            "--hidden-dim", type=int, default=64, help="the experts' width (servers' --hidden-dim)"
        ),
        mixture.add_argument("--k-best", type=int, default=4),
        mixture.add_argument("--k-min", type=int, default=1),
        mixture.add_argument("--backward-k-min", type=int, default=1),
        mixture.add_argument("--forward-timeout", type=float, default=10.0),
        mixture.add_argument("--timeout-after-k-min", type=float, default=1.0),
        mixture.add_argument("--backward-timeout", type=float, default=10.0),
        mixture.add_argument("--allow-zero-outputs", action="store_true"),
        mixture.add_argument(
            "--detect-anomalies",
            action="store_true",
            help="also refuse answers whose norm overflows (non-finite answers are always refused)",
        ),
    ]


def add_training_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    training = parser.add_argument_group("training")
    return [
        training.add_argument(
            "--dataset",
            default="digits",
            help="digits (bundled), synthetic (random: for throughput) or mnist:DIRECTORY of IDX files",
        ),
        training.add_argument("--epochs", type=int, default=10),
        training.add_argument("--max-steps", type=int, default=None),
        training.add_argument("--batch-size", type=int, default=64),
        training.add_argument("--learning-rate", type=float, default=3e-3),
        training.add_argument("--seed", type=int, default=0),
        training.add_argument("--log-every", type=int, default=10, help="steps between progress lines"),
        training.add_argument(
            "--average-every",
            type=int,
            default=0,
            metavar="N",
            help="average this trainer's own parameters (encoder, gates, head) with other trainers' "
            "every N steps, so many trainers train one model (0: never)",
        ),
        training.add_argument(
            "--average-group", type=int, default=8, help="trainers per averaging group (at least 2)"
        ),
        training.add_argument(
            "--average-window", type=float, default=5.0, help="seconds between averaging rounds' starts"
        ),
        training.add_argument(
            "--average-settle",
            type=float,
            default=None,
            metavar="SECONDS",
            help="at the end, keep averaging this long without training, so trainers that finish at "
            "different times end on one model (default: three windows)",
        ),
    ]


def as_command_line(actions: list[argparse.Action], options: argparse.Namespace) -> list[str]:
    """The flags that give another command the values ``options`` holds for ``actions``."""
    arguments: list[str] = []
    for action in actions:
        value, flag = getattr(options, action.dest), action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            arguments += [flag] if value else []
        elif value is None:
            continue
        elif isinstance(value, list):
            arguments += [flag, *map(str, value)]
        else:
            arguments += [flag, str(value)]
    return arguments
