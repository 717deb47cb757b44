"""Network benchmark: wire decoding, RPC latency and throughput on loopback, simulator speed.

Every figure is paired with a baseline measured in the same run, so the ratios hold on a noisy machine:

| figure              | baseline                                   |
| decode_gbps         | memcpy_gbps: a plain tensor copy, same size |
| rpc_small_p50_us    | bare_small_p50_us: a bare trio stream echo of the same bytes |
| rpc_large_gbps      | bare_large_gbps: a bare trio stream echo of the same 64 MiB |
| sim_messages_per_s  | (target 30,000) 1,000 simulated hosts exchanging RPCs |

Usage: python benchmarks/bench_net.py [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import msgspec
import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator import SimNetwork, Uniform, run_simulation
from tesseract.net import (
    DatagramRPC,
    Router,
    RPCClient,
    RPCServer,
    WireTensor,
    deserialize_tensor,
    serialize_tensor,
)
from tesseract.net.messages import Request, decode_payload, encode_frame, split_body
from tesseract.net.real import RealHost, keep_freed_memory_for_reuse

MiB = 1024 * 1024


class Ping(msgspec.Struct, tag="ping", array_like=True):
    value: int


class Blob(msgspec.Struct, tag="blob", array_like=True):
    tensor: WireTensor


def best_rate(nbytes: int, fn, repeats: int) -> float:
    """Bytes per second of the fastest of ``repeats`` runs (GB/s)."""
    best = min(_timed(fn) for _ in range(repeats))
    return nbytes / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_decode(size: int, repeats: int) -> dict:
    tensor = torch.randn(size // 4)
    frame = encode_frame(Request(1, "blob", 1.0), Blob(serialize_tensor(tensor)), max_frame_size=size + MiB)
    body = memoryview(frame)[7:]  # as the frame decoder hands it over: the body, in its own buffer
    envelope_size = int.from_bytes(frame[5:7], "big")

    def decode() -> None:
        _, payload = split_body(body, envelope_size)
        decoded = deserialize_tensor(decode_payload(Blob, payload).tensor)
        assert decoded.numel() == tensor.numel()

    def encode() -> None:
        encode_frame(Request(1, "blob", 1.0), Blob(serialize_tensor(tensor)), max_frame_size=size + MiB)

    destination = torch.empty_like(tensor)
    return {
        "decode_gbps": best_rate(size, decode, repeats),
        "encode_gbps": best_rate(size, encode, repeats),
        "memcpy_gbps": best_rate(size, lambda: destination.copy_(tensor), repeats),
    }


async def _bare_echo_server(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(1 << 20):
            await stream.send_all(data)


async def _bare_roundtrip(stream: trio.SocketStream, data: bytes) -> None:
    async def receive() -> None:
        remaining = len(data)
        while remaining:
            chunk = await stream.receive_some(min(remaining, 1 << 20))
            remaining -= len(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await stream.send_all(data)


async def bench_loopback(small_calls: int, large_size: int, large_repeats: int) -> dict:
    router = Router()

    async def ping(request: Ping, peer: str) -> Ping:
        return Ping(request.value)

    async def blob(request: Blob, peer: str) -> Blob:
        return Blob(serialize_tensor(deserialize_tensor(request.tensor)))

    router.add("ping", Ping, ping)
    router.add("blob", Blob, blob)
    async with (
        RealHost.open("127.0.0.1:0") as server_host,
        RealHost.open("127.0.0.1:0") as client_host,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(RPCServer(server_host, router).serve)
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _bare_echo_server, 0, host="127.0.0.1")
        )
        bare_port = listeners[0].socket.getsockname()[1]
        bare = await trio.open_tcp_stream("127.0.0.1", bare_port)
        async with RPCClient(client_host) as client:
            small_frame_bytes = bytes(len(encode_frame(Request(1, "ping", 5.0), Ping(7), max_frame_size=MiB)))
            rpc_times, bare_times = [], []
            for _ in range(200):  # warm-up: connections, code paths
                await client.call(server_host.address, "ping", Ping(7), Ping, timeout=5)
                await _bare_roundtrip(bare, small_frame_bytes)
            for _ in range(small_calls):
                started = time.perf_counter()
                await client.call(server_host.address, "ping", Ping(7), Ping, timeout=5)
                rpc_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                await _bare_roundtrip(bare, small_frame_bytes)
                bare_times.append(time.perf_counter() - started)

            tensor = torch.randn(large_size // 4)
            payload = bytes(tensor.numpy().view("u1"))
            rpc_large, bare_large = [], []
            for _ in range(large_repeats):
                started = time.perf_counter()
                reply = await client.call(
                    server_host.address, "blob", Blob(serialize_tensor(tensor)), Blob, timeout=60
                )
                rpc_large.append(time.perf_counter() - started)
                assert deserialize_tensor(reply.tensor).numel() == tensor.numel()
                started = time.perf_counter()
                await _bare_roundtrip(bare, payload)
                bare_large.append(time.perf_counter() - started)
        await bare.aclose()
        nursery.cancel_scope.cancel()
    round_trip_bytes = 2 * large_size
    return {
        "rpc_small_p50_us": statistics.median(rpc_times) * 1e6,
        "bare_small_p50_us": statistics.median(bare_times) * 1e6,
        "rpc_small_p99_us": sorted(rpc_times)[int(0.99 * (len(rpc_times) - 1))] * 1e6,
        "rpc_large_gbps": round_trip_bytes / min(rpc_large) / 1e9,
        "bare_large_gbps": round_trip_bytes / min(bare_large) / 1e9,
        "large_size_bytes": large_size,
    }


def bench_simulator(hosts: int, virtual_seconds: float, kind: str, seed: int = 1) -> dict:
    """``hosts`` simulated nodes, each calling random peers in a closed loop (datagram RPC, as the DHT
    does) or a fixed set of 8 peers over pooled stream connections."""
    network = SimNetwork(seed=seed, latency=Uniform(0.01, 0.05))
    result: dict = {}

    async def main(network: SimNetwork) -> None:
        nodes = network.add_hosts(hosts)
        router = Router()

        async def ping(request: Ping, peer: str) -> Ping:
            return Ping(request.value + 1)

        router.add("ping", Ping, ping)

        async def node(host) -> None:
            rng = host.random
            async with trio.open_nursery() as nursery:
                if kind == "datagram":
                    rpc = DatagramRPC(host, router)
                    await nursery.start(rpc.serve)
                    while True:
                        peer = nodes[rng.randrange(hosts)].address
                        await rpc.call(peer, "ping", Ping(1), Ping, timeout=5)
                else:
                    await nursery.start(RPCServer(host, router).serve)
                    async with RPCClient(host) as client:
                        while True:
                            peer = nodes[(host.index + 1 + rng.randrange(8)) % hosts].address
                            await client.call(peer, "ping", Ping(1), Ping, timeout=5)

        for host in nodes:
            host.start(node, host)
        await trio.sleep(1.0)  # warm-up (connections, in the stream case)
        delivered, started = network.messages_delivered, time.perf_counter()
        await trio.sleep(virtual_seconds)
        result["wall_s"] = time.perf_counter() - started
        result["messages"] = network.messages_delivered - delivered

    run_simulation(main, network)
    return {
        "messages_per_s": result["messages"] / result["wall_s"],
        "messages": result["messages"],
        "trace_hash": network.trace_hash,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    options = parser.parse_args()
    quick = options.quick
    large = (4 if quick else 64) * MiB
    keep_freed_memory_for_reuse()  # as every real node does when its host opens

    results: dict = {}
    results.update(bench_decode(large, repeats=3 if quick else 10))
    results.update(trio.run(bench_loopback, 200 if quick else 2000, large, 2 if quick else 5))
    sim_hosts = 100 if quick else 1000
    sim_seconds = 0.5 if quick else 3.0
    datagram = bench_simulator(sim_hosts, sim_seconds, "datagram")
    stream = bench_simulator(sim_hosts, sim_seconds, "stream")
    results["sim_messages_per_s"] = datagram["messages_per_s"]
    results["sim_stream_messages_per_s"] = stream["messages_per_s"]
    results["sim_trace_hash"] = datagram["trace_hash"]
    results["sim_hosts"] = sim_hosts

    rows = [
        ("tensor decode (GB/s)", results["decode_gbps"], "memcpy", results["memcpy_gbps"], 0.5, True),
        ("tensor encode (GB/s)", results["encode_gbps"], "memcpy", results["memcpy_gbps"], None, True),
        (
            "small RPC p50 (us)",
            results["rpc_small_p50_us"],
            "bare echo",
            results["bare_small_p50_us"],
            3.0,
            False,
        ),
        (
            "64 MiB RPC echo (GB/s)",
            results["rpc_large_gbps"],
            "bare echo",
            results["bare_large_gbps"],
            0.4,
            True,
        ),
    ]
    print(f"{'measure':<26}{'value':>12}  {'baseline':<10}{'value':>12}{'ratio':>9}  target")
    for name, value, base_name, base, target, higher_better in rows:
        ratio = value / base
        if target is None:
            verdict = ""
        elif higher_better:
            verdict = f">= {target:g}  {'ok' if ratio >= target else 'MISSED'}"
        else:
            verdict = f"<= {target:g}  {'ok' if ratio <= target else 'MISSED'}"
        print(f"{name:<26}{value:>12.2f}  {base_name:<10}{base:>12.2f}{ratio:>9.2f}  {verdict}")
    target = 30_000
    for name, key in (
        ("sim datagram RPC msg/s", "sim_messages_per_s"),
        ("sim stream RPC msg/s", "sim_stream_messages_per_s"),
    ):
        value = results[key]
        verdict = (
            f">= {target}  {'ok' if value >= target else 'MISSED'}" if key == "sim_messages_per_s" else ""
        )
        print(f"{name:<26}{value:>12.0f}  {f'{sim_hosts} hosts':<10}{'':>12}{'':>9}  {verdict}")
    print(f"sim trace hash: {results['sim_trace_hash']}")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2, sort_keys=True))
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
