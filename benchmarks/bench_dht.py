"""DHT benchmark: a large simulated swarm under churn, or real processes on loopback.

    python benchmarks/bench_dht.py --sim --nodes 10000 --churn 1800 --latency 0.05
    python benchmarks/bench_dht.py --real --nodes 16

Simulated figures are in virtual time (the links' latency), so they do not depend on this machine;
``wall_s`` says what the run cost. Rounds are round trips on a get's critical path (latency divided by
the round-trip time of the fixed-latency links).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import report
from simulator import SimNetwork, run_simulation
from tesseract.dht import DHTConfig, DHTNode
from tesseract.launch import LocalDHTSwarm


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_sim(nodes: int, mean_session: float, latency: float, duration: float, keys: int, seed: int) -> dict:
    network = SimNetwork(seed=seed, latency=latency)
    config = DHTConfig(request_timeout=4 * latency + 0.5, operation_timeout=10.0)
    rng = random.Random(seed)
    members: dict[int, DHTNode] = {}
    results: dict = {"latencies": [], "found": 0, "missing": 0, "joins": 0, "departures": 0}

    async def node_life(host, peers: list[str]) -> None:
        try:
            async with DHTNode.start(host, peers, config=config, leave_gracefully=False) as node:
                members[host.index] = node
                await trio.sleep_forever()
        finally:
            members.pop(host.index, None)

    def pick_peers() -> list[str]:
        alive = list(members.values())
        return [rng.choice(alive).address for _ in range(3)] if alive else []

    async def churn(host) -> None:
        """Session after session on one slot: leave (crash) after an exponential session, a new node joins."""
        while True:
            await trio.sleep(rng.expovariate(1.0 / mean_session))
            host.crash()
            results["departures"] += 1
            await trio.sleep(rng.expovariate(1.0 / 30.0))  # the slot stays empty a little while
            host.restart()
            host.start(node_life, host, pick_peers())
            results["joins"] += 1

    async def main(network: SimNetwork) -> None:
        hosts = network.add_hosts(nodes)
        hosts[0].start(node_life, hosts[0], [])
        await trio.sleep(0.1)
        for host in hosts[1:]:
            host.start(node_life, host, pick_peers())
            await trio.sleep(0.005)
        while len(members) < nodes * 0.99:
            await trio.sleep(1)
        await trio.sleep(30)
        publishers = rng.sample(list(members.values()), min(keys, len(members)))
        expiration = publishers[0].host.wall_time() + 6 * 3600
        names = [f"key-{i}" for i in range(keys)]
        async with trio.open_nursery() as nursery:
            for name, publisher in zip(names, publishers * (keys // len(publishers) + 1), strict=False):
                nursery.start_soon(publisher.store, name, name, expiration)
        async with trio.open_nursery() as background:
            for host in hosts:
                background.start_soon(churn, host)
            end = trio.current_time() + duration

            async def reader() -> None:
                while trio.current_time() < end:
                    alive = list(members.values())
                    node = rng.choice(alive)
                    name = rng.choice(names)
                    started = trio.current_time()
                    try:
                        found = await node.get(name, use_local=False)
                    except trio.Cancelled:
                        raise
                    if not node.host.up:
                        continue  # the reader itself left mid-get: not the DHT's failure
                    if found is not None and found.value == name:
                        results["found"] += 1
                        results["latencies"].append(trio.current_time() - started)
                    else:
                        results["missing"] += 1
                    await trio.sleep(rng.expovariate(2.0))

            async with trio.open_nursery() as readers:
                for _ in range(20):
                    readers.start_soon(reader)
            background.cancel_scope.cancel()

    started = time.perf_counter()
    run_simulation(main, network)
    wall = time.perf_counter() - started
    latencies = results["latencies"]
    round_trip = 2 * latency
    rounds = [round(value / round_trip) for value in latencies]
    total = results["found"] + results["missing"]
    return {
        "mode": "sim",
        "nodes": nodes,
        "mean_session_s": mean_session,
        "link_latency_s": latency,
        "virtual_duration_s": duration,
        "gets": total,
        "get_success_rate": results["found"] / total if total else 0.0,
        "mean_rounds": statistics.mean(rounds) if rounds else 0.0,
        "p50_rounds": percentile(rounds, 0.5) if rounds else 0,
        "p50_get_ms": percentile(latencies, 0.5) * 1e3 if latencies else 0.0,
        "p99_get_ms": percentile(latencies, 0.99) * 1e3 if latencies else 0.0,
        "departures": results["departures"],
        "joins": results["joins"],
        "messages": network.messages_delivered,
        "trace_hash": network.trace_hash,
        "wall_s": wall,
    }


def bench_real(nodes: int, keys: int) -> dict:
    with LocalDHTSwarm(nodes) as swarm:
        store_ms, get_ms, found = [], [], 0
        for i in range(keys):
            writer = swarm.nodes[i % nodes]
            answer = writer.command(op="store", key=f"key-{i}", value=i, ttl=600)
            store_ms.append(answer["ms"])
        for i in range(keys):
            for reader in swarm.nodes:
                answer = reader.command(op="get", key=f"key-{i}", use_local=False)
                found += answer["found"] and answer.get("value") == i
                get_ms.append(answer["ms"])
        return {
            "mode": "real",
            "nodes": nodes,
            "get_p50_ms": percentile(get_ms, 0.5),
            "get_p99_ms": percentile(get_ms, 0.99),
            "store_p50_ms": percentile(store_ms, 0.5),
            "get_success_rate": found / len(get_ms),
            "startup_s": swarm.startup_s,
            "gets": len(get_ms),
            "stores": len(store_ms),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sim", action="store_true", help="a simulated swarm")
    mode.add_argument("--real", action="store_true", help="real processes on loopback")
    parser.add_argument("--nodes", type=int, default=None, help="swarm size (sim: 10000, real: 16)")
    parser.add_argument("--churn", type=float, default=1800.0, help="sim: mean session length in seconds")
    parser.add_argument("--latency", type=float, default=0.05, help="sim: link latency in seconds")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="sim: virtual seconds of churn and reads"
    )
    parser.add_argument("--keys", type=int, default=None, help="records stored (sim: 1000, real: 64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    options = parser.parse_args()
    if options.sim:
        result = bench_sim(
            options.nodes or 10_000,
            options.churn,
            options.latency,
            options.duration,
            options.keys or 1000,
            options.seed,
        )
        rows = [
            ("get success rate", f"{result['get_success_rate']:.4f}", ">= 0.99"),
            ("mean rounds (round trips)", f"{result['mean_rounds']:.2f}", "p50 < 4"),
            ("p50 rounds", f"{result['p50_rounds']}", "< 4"),
            ("p50 get (virtual ms)", f"{result['p50_get_ms']:.0f}", ""),
            ("p99 get (virtual ms)", f"{result['p99_get_ms']:.0f}", ""),
            (
                "gets / departures / joins",
                f"{result['gets']} / {result['departures']} / {result['joins']}",
                "",
            ),
            ("wall seconds", f"{result['wall_s']:.1f}", ""),
        ]
        title = (
            f"simulated DHT: {result['nodes']} nodes, sessions ~{options.churn:.0f}s, "
            f"{options.latency * 1e3:.0f} ms links"
        )
    else:
        result = bench_real(options.nodes or 16, options.keys or 64)
        rows = [
            ("get p50 (ms)", f"{result['get_p50_ms']:.2f}", "<= 2"),
            ("get p99 (ms)", f"{result['get_p99_ms']:.2f}", ""),
            ("store p50 (ms)", f"{result['store_p50_ms']:.2f}", "<= 5"),
            ("get success rate", f"{result['get_success_rate']:.4f}", "1.0"),
            ("startup (s)", f"{result['startup_s']:.2f}", ""),
        ]
        title = f"real DHT: {result['nodes']} processes on loopback"
    report(title, rows, result, options.json)


if __name__ == "__main__":
    main()
