"""``tesseract server``: host experts on this machine's device and announce them to the DHT.

    tesseract server --experts 'ffn.[0:4].[0:8]' --expert-cls ffn --hidden-dim 1024 --device auto \\
        --listen 0.0.0.0:31337 --initial-peers HOST:PORT --checkpoint-dir ./checkpoints

It prints its address, then a one-line status every ``--status-interval`` seconds; on SIGINT or
SIGTERM it stops announcing, finishes what is in flight, and saves its checkpoints.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

import torch
import trio

from tesseract.console import say
from tesseract.dht.node import BootstrapError, DHTNode
from tesseract.net.real import RealHost
from tesseract.runtime.backend import ExpertBackend, adam
from tesseract.runtime.zoo import make_expert
from tesseract.server.options import expand_experts
from tesseract.server.server import ExpertServer


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_backends(options: argparse.Namespace) -> list[ExpertBackend]:
    device = resolve_device(options.device)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    backends = []
    for uid in expand_experts(options.experts):
        module, schema = make_expert(options.expert_cls, options.hidden_dim)
        backends.append(
            ExpertBackend(
                uid,
                module,
                schema,
                optimizer=lambda params: adam(params, lr=options.learning_rate),
                clip_grad_norm=options.clip_grad_norm,
                max_batch_size=options.max_batch_size,
                device=device,
            )
        )
    return backends


def run(options: argparse.Namespace) -> int:
    try:
        backends = build_backends(options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Everything built so far (torch, the experts) lives as long as the process: keep the garbage
    # collector from walking those ~170,000 objects again and again while serving.
    gc.freeze()
    try:
        return trio.run(_main, options, backends)
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


#: Descriptors held from the start and released when shutdown begins: saving checkpoints needs a few
#: even when peers have taken every other one the process may open.
SHUTDOWN_DESCRIPTORS = 8


async def _main(options: argparse.Namespace, backends: list[ExpertBackend]) -> int:
    reserve = [os.open(os.devnull, os.O_RDONLY) for _ in range(SHUTDOWN_DESCRIPTORS)]
    async with AsyncExitStack() as stack:
        stack.callback(_release, reserve)
        host = await stack.enter_async_context(RealHost.open(options.listen))
        dht = None
        if not options.no_dht:
            dht = await stack.enter_async_context(DHTNode.start(host, options.initial_peers))
        server = await stack.enter_async_context(
            ExpertServer.start(
                host,
                backends,
                dht=dht,
                update_period=options.update_period,
                checkpoint_dir=options.checkpoint_dir,
                checkpoint_period=options.checkpoint_period,
                fault_rate=options.fault_rate,
            )
        )
        device = backends[0].device
        what = f"{len(backends)} {options.expert_cls} experts on {device}"
        say(f"expert server listening on {server.address} ({what})")
        if dht is not None:
            say(f"DHT: others join with --initial-peers {server.address}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_report_status, server, options.status_interval)
            if options.commands:
                nursery.start_soon(_answer_commands, server, nursery.cancel_scope)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    say(f"received {signal.Signals(signum).name}: finishing in-flight work and saving")
                    break
            # Shutdown has begun and saves the checkpoints: another SIGTERM (a launcher's, a
            # supervisor's) must not cut it short, as the default action would once the receiver
            # above is gone. A second Ctrl+C still stops at once.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            nursery.cancel_scope.cancel()
        _release(reserve)  # before the server's shutdown, which saves the checkpoints
    say("stopped")
    return 0


def _release(descriptors: list[int]) -> None:
    while descriptors:
        os.close(descriptors.pop())


def summary(server: ExpertServer) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for kind in ("forward", "backward"):
        stats = [server.runtime.stats[(uid, kind)] for uid in server.backends]
        requests = sum(s.requests for s in stats)
        batches = sum(s.batches for s in stats)
        samples = sum(s.samples for s in stats)
        totals[kind] = {
            "requests": requests,
            "samples": samples,
            "batches": batches,
            "mean_batch_size": samples / batches if batches else 0.0,
            "mean_queue_wait_ms": 1e3 * sum(s.queue_wait_s for s in stats) / requests if requests else 0.0,
            "compute_s": sum(s.compute_s for s in stats),
        }
    totals["errors"] = dict(server.errors)
    totals["steps"] = sum(b.steps for b in server.backends.values())
    return totals


async def _report_status(server: ExpertServer, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        s = summary(server)
        f, b = s["forward"], s["backward"]
        say(
            f"status: forward {f['requests']} req / {f['samples']} samples "
            f"(batch {f['mean_batch_size']:.1f}, "
            f"wait {f['mean_queue_wait_ms']:.1f} ms), backward {b['requests']} req / {b['samples']} samples "
            f"(batch {b['mean_batch_size']:.1f}), compute {f['compute_s'] + b['compute_s']:.1f}s, "
            f"errors {sum(s['errors'].values())}"
        )


async def _answer_commands(server: ExpertServer, scope: trio.CancelScope) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buffer = b""
    while data := await stdin.receive_some():
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                op = json.loads(line).get("op")
                answer = summary(server) if op == "stats" else {"error": f"unknown op {op!r}; use stats"}
            except Exception as exc:  # one bad command must not take the server down
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            say(json.dumps(answer))
    scope.cancel()
