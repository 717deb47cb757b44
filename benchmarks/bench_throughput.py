"""Expert server throughput: N client processes, M experts, batch B, against the same work in-process.

    python benchmarks/bench_throughput.py --clients 4 --experts 4 --expert-cls ffn --hidden-dim 1024 \
        --batch 64

Every client process runs forward then backward of a batch of B rows on the experts in turn, in a
closed loop. ``remote_samples_per_s`` counts rows that completed both, over all clients, in a window
after a warm-up; ``local_samples_per_s`` makes the same backend calls in this process, one after the
other, in the same run (before and after the remote window, averaged); ``efficiency`` is their
ratio. ``tiny_fwd_bwd_p50_ms`` is one client calling a ``nop`` expert with one row, forward then
backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import report
from tesseract.launch import NodeProcess
from tesseract.net import RPCClient, deserialize_tensor, serialize_tensor
from tesseract.net.real import RealHost
from tesseract.server import protocol as wire
from tesseract.server.command import build_backends


async def fwd_bwd(client: RPCClient, address: str, uid: str, x: torch.Tensor, g: torch.Tensor) -> None:
    reply = await client.call(
        address,
        "expert.forward",
        wire.ForwardRequest(uid, [serialize_tensor(x)]),
        wire.ForwardResponse,
        timeout=60,
    )
    assert deserialize_tensor(reply.outputs[0]).shape == x.shape
    request = wire.BackwardRequest(uid, [serialize_tensor(x)], [serialize_tensor(g)])
    reply = await client.call(address, "expert.backward", request, wire.BackwardResponse, timeout=60)
    assert deserialize_tensor(reply.grad_inputs[0]).shape == x.shape


async def client_main(
    address: str, uids: list[str], batch: int, hidden: int, warmup: float, duration: float
) -> dict:
    torch.set_num_threads(1)  # clients only make random inputs; leave the cores to the server
    x, g = torch.randn(batch, hidden), torch.randn(batch, hidden)
    samples = 0
    async with RealHost.open("127.0.0.1:0") as host, RPCClient(host) as client:
        # Loaded and connected: say so, and start when the parent says every client is (a fixed
        # start time missed its window when loading torch took longer than it allowed).
        print("ready", flush=True)
        start_at = float(await trio.to_thread.run_sync(sys.stdin.readline))
        await trio.sleep(max(0.0, start_at - time.time()))
        window_start, window_end = start_at + warmup, start_at + warmup + duration
        index = 0
        while time.time() < window_end:
            await fwd_bwd(client, address, uids[index % len(uids)], x, g)
            index += 1
            finished = time.time()
            if window_start <= finished <= window_end:
                samples += batch
    return {"samples": samples, "window_s": duration}


def run_clients(options: argparse.Namespace, address: str, uids: list[str]) -> int:
    command = [
        sys.executable,
        __file__,
        "--client",
        address,
        "--uids",
        ",".join(uids),
        "--batch",
        str(options.batch),
        "--hidden-dim",
        str(options.hidden_dim),
        "--warmup",
        str(options.warmup),
        "--duration",
        str(options.duration),
    ]
    processes = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(options.clients)
    ]
    for process in processes:  # every client loaded and connected
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a client failed to start (exit {process.wait()})")
    start_at = time.time() + 0.2
    for process in processes:  # all told before any is waited for
        assert process.stdin is not None
        process.stdin.write(f"{start_at}\n")
        process.stdin.close()
    results = []
    for process in processes:
        assert process.stdout is not None
        out = process.stdout.read()
        if process.wait(timeout=options.warmup + options.duration + 120) != 0:
            raise RuntimeError(f"a client failed (exit {process.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return sum(r["samples"] for r in results)


def server_arguments(
    uids_pattern: str, expert_cls: str, hidden: int, max_batch: int, device: str = "cpu"
) -> list[str]:
    return [
        "server",
        "--experts",
        uids_pattern,
        "--expert-cls",
        expert_cls,
        "--hidden-dim",
        str(hidden),
        "--max-batch-size",
        str(max_batch),
        "--no-dht",
        "--listen",
        "127.0.0.1:0",
        "--status-interval",
        "3600",
        "--seed",
        "0",
        "--device",
        device,
    ]


def local_throughput(options: argparse.Namespace, uids_pattern: str, batch: int) -> float:
    """The same forward and backward calls on the same experts, in this process, one after another."""
    namespace = argparse.Namespace(
        experts=uids_pattern,
        expert_cls=options.expert_cls,
        hidden_dim=options.hidden_dim,
        device=options.device,
        seed=0,
        learning_rate=1e-3,
        clip_grad_norm=None,
        max_batch_size=options.max_batch_size,
    )
    backends = build_backends(namespace)
    x, g = torch.randn(batch, options.hidden_dim), torch.randn(batch, options.hidden_dim)
    samples, index = 0, 0
    warm_until = time.perf_counter() + options.warmup
    while time.perf_counter() < warm_until:
        backend = backends[index % len(backends)]
        backend.forward([x])
        backend.backward([x], [g])
        index += 1
    started = time.perf_counter()
    while time.perf_counter() - started < options.duration:
        backend = backends[index % len(backends)]
        backend.forward([x])
        backend.backward([x], [g])
        index += 1
        samples += batch
    return samples / (time.perf_counter() - started)


async def tiny_latency(address: str, calls: int) -> list[float]:
    x, g = torch.randn(1, 8), torch.randn(1, 8)
    times = []
    async with RealHost.open("127.0.0.1:0") as host, RPCClient(host) as client:
        for i in range(calls + 50):
            started = time.perf_counter()
            await fwd_bwd(client, address, "nop.0", x, g)
            if i >= 50:
                times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--expert-cls", default="ffn")
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--tiny-calls", type=int, default=2000)
    parser.add_argument("--device", default="cpu", help="the server's device: cpu, cuda, cuda:N, auto")
    parser.add_argument("--json", type=Path)
    # Internal: this file is also the client process.
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--uids", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.client:
        result = trio.run(
            client_main,
            options.client,
            options.uids.split(","),
            options.batch,
            options.hidden_dim,
            options.warmup,
            options.duration,
        )
        print(json.dumps(result))
        return

    # First, on a quiet machine: the latency of one small call, before the load runs.
    tiny_server = NodeProcess(server_arguments("nop.[0:1]", "nop", 8, 64, options.device))
    tiny_server.wait_until_listening()
    try:
        tiny = trio.run(tiny_latency, tiny_server.address, options.tiny_calls)
    finally:
        tiny_server.stop()

    uids_pattern = f"{options.expert_cls}.[0:{options.experts}]"
    uids = [f"{options.expert_cls}.{i}" for i in range(options.experts)]
    server = NodeProcess(
        server_arguments(
            uids_pattern, options.expert_cls, options.hidden_dim, options.max_batch_size, options.device
        )
    )
    server.wait_until_listening()
    # The in-process baseline runs before and after the remote window, and their mean is the
    # baseline: this machine's speed drifts over seconds, and bracketing cancels a steady drift.
    local_before = local_throughput(options, uids_pattern, options.batch)
    try:
        remote_samples = run_clients(options, server.address, uids)
        stats = server.command(op="stats")
    finally:
        server.stop()
    remote = remote_samples / options.duration
    local_after = local_throughput(options, uids_pattern, options.batch)
    local = (local_before + local_after) / 2
    # Stricter: in-process calls at the batch size the server actually ran, so batching gains cancel out
    # and what remains is the cost of serving (network, queues, copies).
    server_batch = max(1, round(stats["backward"]["mean_batch_size"]))
    local_same_batch = local_throughput(options, uids_pattern, server_batch)

    result = {
        "remote_samples_per_s": remote,
        "local_samples_per_s": local,
        "local_samples_per_s_before_and_after": [local_before, local_after],
        "efficiency": remote / local,
        "local_samples_per_s_at_server_batch": local_same_batch,
        "efficiency_at_server_batch": remote / local_same_batch,
        "tiny_fwd_bwd_p50_ms": statistics.median(tiny) * 1e3,
        "tiny_fwd_bwd_p99_ms": sorted(tiny)[int(0.99 * (len(tiny) - 1))] * 1e3,
        "server_mean_forward_batch": stats["forward"]["mean_batch_size"],
        "server_mean_backward_batch": stats["backward"]["mean_batch_size"],
        "parameters": {
            "clients": options.clients,
            "experts": options.experts,
            "expert_cls": options.expert_cls,
            "hidden_dim": options.hidden_dim,
            "batch": options.batch,
            "duration_s": options.duration,
            "device": options.device,
            "torch_threads": torch.get_num_threads(),
        },
    }
    rows = [
        ("remote samples/s", f"{remote:.1f}", ""),
        ("local samples/s (in-process)", f"{local:.1f}", ""),
        ("  before / after the remote run", f"{local_before:.0f} / {local_after:.0f}", ""),
        ("efficiency", f"{remote / local:.3f}", ">= 0.95"),
        (f"local samples/s at batch {server_batch}", f"{local_same_batch:.1f}", ""),
        ("efficiency at server batch", f"{remote / local_same_batch:.3f}", ""),
        (
            "server mean batch (fwd / bwd)",
            f"{stats['forward']['mean_batch_size']:.1f} / {stats['backward']['mean_batch_size']:.1f}",
            "",
        ),
        ("tiny fwd+bwd p50 (ms)", f"{result['tiny_fwd_bwd_p50_ms']:.3f}", "<= 1"),
        ("tiny fwd+bwd p99 (ms)", f"{result['tiny_fwd_bwd_p99_ms']:.3f}", ""),
    ]
    title = (
        f"expert throughput: {options.clients} client processes, {options.experts} {options.expert_cls} "
        f"experts, hidden {options.hidden_dim}, batch {options.batch}, device {options.device}"
    )
    report(title, rows, result, options.json)


if __name__ == "__main__":
    main()
