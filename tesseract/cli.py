"""The ``tesseract`` command (also ``tesseract-moe`` and ``python -m tesseract``).

Each subcommand lives in its package's ``command`` module; its parser is built here without importing
torch, so a DHT-only process starts fast, and torch loads only once a command that needs it runs.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from tesseract import __version__
from tesseract.dht import command as dht_command
from tesseract.launch import die_with_parent
from tesseract.server import options as server_options
from tesseract.swarm import command as swarm_command
from tesseract.train import options as train_options

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tesseract", description="Decentralized mixture-of-experts training over volunteer machines."
    )
    parser.add_argument("--version", action="version", version=f"tesseract-moe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    dht = commands.add_parser("dht", help="run a standalone DHT node")
    dht_command.add_arguments(dht)
    server = commands.add_parser("server", help="host experts and announce them to the DHT")
    server_options.add_arguments(server)
    swarm = commands.add_parser("swarm", help="run a whole swarm and train it (--local: processes here)")
    swarm_command.add_arguments(swarm)
    train = commands.add_parser("train", help="train a mixture-of-experts classifier through the swarm")
    train_options.add_arguments(train)
    sim = commands.add_parser("sim", help="run a scenario file in the simulator and report on it")
    from simulator import command as sim_command  # torch-free: the simulator loads torch only to run

    sim_command.add_arguments(sim)
    bench = commands.add_parser("bench", help="run a benchmark from benchmarks/ (in a source checkout)")
    bench.add_argument("name", choices=["net", "dht", "throughput", "moe"], help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a reader that went away shows now
        return code
    except BrokenPipeError:
        from tesseract.net.real import stdout_reader_gone

        if not stdout_reader_gone():
            raise  # a pipe to something else: a real error
        # The reader went away (``tesseract sim validate FILE | head -1``): not worth a traceback.
        # Python would fail again flushing stdout at exit, so point it at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def _main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.command == "dht":
        return dht_command.run(options)
    if options.command == "server":
        from tesseract.server import command as server_command  # loads torch

        return server_command.run(options)
    if options.command == "swarm":
        return swarm_command.run(options)
    if options.command == "train":
        from tesseract.train import command as train_command  # loads torch

        return train_command.run(options)
    if options.command == "sim":
        from simulator import command as sim_command

        return sim_command.run(options)
    if options.command == "bench":
        script = BENCHMARKS / f"bench_{options.name}.py"
        if not script.exists():
            parser.error(f"{script} not found: benchmarks ship with the source checkout, not the wheel")
        sys.argv = [str(script), *options.args]
        runpy.run_path(str(script), run_name="__main__")
        return 0
    parser.print_help()
    return 0
