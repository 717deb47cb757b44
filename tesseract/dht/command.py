"""``tesseract dht``: run a standalone DHT node.

It prints the address others join with, then a status line (routing table size, records held) every
``--status-interval`` seconds. With ``--commands``, it also reads JSON lines on stdin
(``{"op": "store", "key": "k", "value": 1, "ttl": 60}``, ``{"op": "get", "key": "k"}``,
``{"op": "stats"}``) and answers each with one JSON line, which is how scripts, tests and
``benchmarks/bench_dht.py`` drive nodes in other processes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import trio

from tesseract.console import say
from tesseract.dht.node import BootstrapError, DHTConfig, DHTNode
from tesseract.net.real import RealHost

MAX_COMMAND_LINE = 1 << 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to bind (TCP and UDP); port 0 picks one"
    )
    parser.add_argument(
        "--initial-peers", nargs="*", default=[], metavar="ADDR", help="peers to join through"
    )
    parser.add_argument("--status-interval", type=float, default=10.0, help="seconds between status lines")
    parser.add_argument("--refresh-interval", type=float, default=DHTConfig.refresh_interval)
    parser.add_argument("--republish-interval", type=float, default=DHTConfig.republish_interval)
    parser.add_argument("--commands", action="store_true", help="answer JSON-line commands read on stdin")


def run(options: argparse.Namespace) -> int:
    try:
        return trio.run(_main, options)
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _main(options: argparse.Namespace) -> int:
    config = DHTConfig(
        refresh_interval=options.refresh_interval, republish_interval=options.republish_interval
    )
    async with (
        RealHost.open(options.listen) as host,
        DHTNode.start(host, options.initial_peers, config=config) as node,
    ):
        say(f"DHT node listening on {node.address} (id {node.node_id:040x})")
        say(f"others join with: tesseract dht --initial-peers {node.address}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_report_status, node, options.status_interval)
            if options.commands:
                nursery.start_soon(_answer_commands, node, nursery.cancel_scope)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    say(f"received {signal.Signals(signum).name}: leaving the DHT")
                    break
            nursery.cancel_scope.cancel()
    return 0


async def _report_status(node: DHTNode, interval: float) -> None:
    while True:
        say(f"status: routing table {len(node.routing)} peers, {len(node.storage)} records held")
        await trio.sleep(interval)


async def _answer_commands(node: DHTNode, scope: trio.CancelScope) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buffer = b""
    while data := await stdin.receive_some():
        buffer += data
        if len(buffer) > MAX_COMMAND_LINE and b"\n" not in buffer:
            say(json.dumps({"error": "command line too long"}))
            buffer = b""
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                say(json.dumps(await _execute(node, line)))
    scope.cancel()  # stdin closed: the controlling process is gone


async def _execute(node: DHTNode, line: bytes) -> dict[str, Any]:
    try:
        command = json.loads(line)
        op = command["op"]
        started = trio.current_time()
        if op == "store":
            expiration = node.host.wall_time() + float(command.get("ttl", 600))
            ok = await node.store(command["key"], command["value"], expiration, subkey=command.get("subkey"))
            return {"op": op, "ok": ok, "ms": (trio.current_time() - started) * 1e3}
        if op == "get":
            found = await node.get(
                command["key"],
                latest=bool(command.get("latest", False)),
                use_local=bool(command.get("use_local", True)),
            )
            answer = {"op": op, "found": found is not None, "ms": (trio.current_time() - started) * 1e3}
            if found is not None and found.subkeys is not None:
                answer["subkeys"] = {str(k): v.value for k, v in found.subkeys.items()}
            elif found is not None:
                answer["value"] = found.value
            return answer
        if op == "stats":
            return {
                "op": op,
                "peers": len(node.routing),
                "records": len(node.storage),
                "address": node.address,
            }
        return {"error": f"unknown op {op!r}; use store, get or stats"}
    except Exception as exc:  # one bad command must not take the node down
        return {"error": f"{type(exc).__name__}: {exc}"}
