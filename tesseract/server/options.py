"""The ``tesseract server`` options and expert patterns: torch-free, so building the CLI stays fast."""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

from tesseract.expert_uid import parse_uid

_RANGE = re.compile(r"\[(\d+):(\d+)\]")


def expand_experts(pattern: str) -> list[str]:
    """``ffn.[0:2].[0:3]`` -> ffn.0.0 ... ffn.1.2; commas separate patterns; each uid is validated."""
    uids: list[str] = []
    for part in filter(None, (p.strip() for p in pattern.split(","))):
        choices = []
        for component in part.split("."):
            match = _RANGE.fullmatch(component)
            if match:
                low, high = int(match.group(1)), int(match.group(2))
                if high <= low:
                    raise ValueError(f"empty range {component} in {part!r}")
                choices.append([str(i) for i in range(low, high)])
            else:
                choices.append([component])
        for combination in itertools.product(*choices):
            uid = ".".join(combination)
            parse_uid(uid)
            uids.append(uid)
    if not uids:
        raise ValueError(f"no experts in {pattern!r}")
    if len(set(uids)) != len(uids):
        raise ValueError(f"{pattern!r} names some experts twice")
    return uids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experts", required=True, help="uids or patterns, e.g. 'ffn.[0:4].[0:8]' (comma-separated)"
    )
    parser.add_argument("--expert-cls", default="ffn", help="ffn, transformer, nop, or package.module:Class")
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for TCP (experts) and UDP (DHT)")
    parser.add_argument(
        "--initial-peers", nargs="*", default=[], metavar="ADDR", help="DHT peers to join through"
    )
    parser.add_argument("--no-dht", action="store_true", help="serve without joining or starting a DHT")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="restore experts from here; save them here"
    )
    parser.add_argument(
        "--checkpoint-period",
        type=float,
        default=60.0,
        help="seconds between checkpoints of the experts that trained (a crash loses at most this)",
    )
    parser.add_argument("--max-batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--clip-grad-norm", type=float, default=None)
    parser.add_argument("--update-period", type=float, default=30.0, help="seconds between DHT announcements")
    parser.add_argument("--status-interval", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="seed the experts' initial weights")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="answer this share of forward/backward requests with an injected error (failure testing)",
    )
    parser.add_argument(
        "--commands", action="store_true", help="answer JSON-line commands ({'op': 'stats'}) on stdin"
    )
