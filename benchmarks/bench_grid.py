"""Wide grids in the simulator: every expert announced and found, what announcing costs, and routing's
share of a training step, for a wide grid against a narrow one in the same run.

    python benchmarks/bench_grid.py --grid 256 256 --servers 4

Each grid runs in its own simulated swarm: DHT nodes, servers that share the grid (``nop`` experts:
one parameter each, so the experts' arithmetic is not what is measured) and one trainer whose
``RemoteMixtureOfExperts`` runs forward and backward steps. Figures are in virtual time, with the
links' latency (``--latency``) on every message: ``wall_s`` says what the run cost on this machine.
Announcement traffic is what the servers send in one announcement period once all have announced
(their DHT upkeep included), and what the whole network sends in that period, per server.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import report
from simulator import SimNetwork, run_simulation
from tesseract.client import Client, RemoteMixtureOfExperts
from tesseract.dht import DHTNode
from tesseract.expert_uid import grid_uids
from tesseract.launch import split_evenly
from tesseract.net.host import Host
from tesseract.runtime import ExpertBackend, make_expert
from tesseract.server import ExpertServer
from tesseract.train.command import count_live_experts


def measure(grid: tuple[int, ...], options: argparse.Namespace) -> dict[str, Any]:
    """One simulated swarm serving ``grid``; its figures."""
    started = time.perf_counter()
    hidden = options.hidden_dim
    torch.manual_seed(0)
    backends = []
    for uid in grid_uids("ffn", grid):
        module, schema = make_expert("nop", hidden)
        backends.append(ExpertBackend(uid, module, schema))
    network = SimNetwork(seed=options.seed, latency=options.latency)
    result: dict[str, Any] = {"grid": list(grid), "experts": len(backends)}

    async def serve(host: Host, peers: list[str], shard: list[ExpertBackend], ready: list[int]) -> None:
        async with AsyncExitStack() as stack:
            dht = await stack.enter_async_context(DHTNode.start(host, peers, leave_gracefully=False))
            await stack.enter_async_context(
                ExpertServer.start(host, shard, dht=dht, update_period=options.update_period)
            )
            ready.append(1)  # ExpertServer.start returns once its first announcement is stored
            await trio.sleep_forever()

    async def run_dht(host: Host, peers: list[str]) -> None:
        async with DHTNode.start(host, peers, leave_gracefully=False):
            await trio.sleep_forever()

    async def main(network: SimNetwork) -> None:
        dht_hosts = network.add_hosts(options.dht_nodes)
        server_hosts = network.add_hosts(options.servers)
        trainer_host = network.add_host()
        bootstrap = [dht_hosts[0].address]
        dht_hosts[0].start(run_dht, dht_hosts[0], [])
        await trio.sleep(0.1)
        for host in dht_hosts[1:]:
            host.start(run_dht, host, bootstrap)
        await trio.sleep(1)
        ready: list[int] = []
        announce_started = trio.current_time()
        for host, shard in zip(server_hosts, split_evenly(backends, options.servers), strict=True):
            host.start(serve, host, bootstrap, shard, ready)
        while len(ready) < options.servers:
            await trio.sleep(0.05)
        result["first_announcement_s"] = trio.current_time() - announce_started

        # One whole period, from a moment every server has announced: each renews once in it.
        addresses = [host.address for host in server_hosts]
        before = [network.traffic(address) for address in addresses]
        network_before = sum(network.sent_bytes)
        await trio.sleep(options.update_period)
        after = [network.traffic(address) for address in addresses]
        sent = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
        result["announce_messages_per_server"] = sum(m for m, _ in sent) / len(sent)
        result["announce_bytes_per_server"] = sum(b for _, b in sent) / len(sent)
        result["network_bytes_per_server"] = (sum(network.sent_bytes) - network_before) / len(sent)

        async with Client.attach(trainer_host, bootstrap) as client:
            x = torch.randn(options.batch, hidden, generator=torch.Generator().manual_seed(1))
            # The default routing cache (what a trainer runs with), then none: every step asks the DHT.
            for label, cache_ttl in (("", 10.0), ("uncached_", 0.0)):
                torch.manual_seed(0)
                mixture = RemoteMixtureOfExperts(
                    in_features=hidden,
                    grid_size=grid,
                    uid_prefix="ffn",
                    client=client,
                    k_best=options.k_best,
                    cache_ttl=cache_ttl,
                )
                if not label:
                    found_at = trio.current_time()
                    result["experts_found"] = await count_live_experts(mixture)
                    result["find_all_s"] = trio.current_time() - found_at
                result.update(await training_steps(client, mixture, x, options.steps, label))
        network.nursery.cancel_scope.cancel()

    run_simulation(main, network)
    result["trace_hash"] = network.trace_hash
    result["wall_s"] = time.perf_counter() - started
    return result


async def training_steps(
    client: Client, mixture: RemoteMixtureOfExperts, x: torch.Tensor, steps: int, label: str
) -> dict[str, float]:
    """Forward and backward steps through ``mixture`` (after one to warm up); their figures."""
    optimizer = torch.optim.Adam(mixture.parameters(), lr=1e-3)

    def step() -> None:
        mixture(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    await client.host.compute(step)  # schemas cached
    routing_before, rounds_before = mixture.routing_time, mixture.finder.rounds
    started = trio.current_time()
    for _ in range(steps):
        await client.host.compute(step)
    elapsed = trio.current_time() - started
    routing = mixture.routing_time - routing_before
    return {
        f"{label}step_ms": 1e3 * elapsed / steps,
        f"{label}routing_ms_per_step": 1e3 * routing / steps,
        f"{label}beam_search_share": routing / elapsed,
        f"{label}dht_rounds_per_step": (mixture.finder.rounds - rounds_before) / steps,
        f"{label}failed_calls": mixture.stats["forward_failures"] + mixture.stats["backward_failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--baseline-grid", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--dht-nodes", type=int, default=8)
    parser.add_argument("--k-best", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--update-period", type=float, default=60.0)
    parser.add_argument("--latency", type=float, default=0.02, help="one-way latency of every link (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    wide = measure(tuple(options.grid), options)
    narrow = measure(tuple(options.baseline_grid), options)
    rows = []
    for name, key, fmt in [
        ("experts", "experts", "{:.0f}"),
        ("experts found", "experts_found", "{:.0f}"),
        ("first announcement (s)", "first_announcement_s", "{:.2f}"),
        ("announce msgs/server/period", "announce_messages_per_server", "{:.0f}"),
        ("announce KiB/server/period", "announce_bytes_per_server", "{:.0f}"),
        ("network KiB/server/period", "network_bytes_per_server", "{:.0f}"),
        ("find every expert (s)", "find_all_s", "{:.2f}"),
        ("step (ms)", "step_ms", "{:.1f}"),
        ("routing per step (ms)", "routing_ms_per_step", "{:.1f}"),
        ("beam_search_share", "beam_search_share", "{:.3f}"),
        ("DHT rounds per step", "dht_rounds_per_step", "{:.2f}"),
        ("failed expert calls", "failed_calls", "{:.0f}"),
        ("uncached: step (ms)", "uncached_step_ms", "{:.1f}"),
        ("uncached: routing/step (ms)", "uncached_routing_ms_per_step", "{:.1f}"),
        ("uncached: beam_search_share", "uncached_beam_search_share", "{:.3f}"),
        ("uncached: DHT rounds/step", "uncached_dht_rounds_per_step", "{:.2f}"),
        ("uncached: failed calls", "uncached_failed_calls", "{:.0f}"),
        ("wall (s)", "wall_s", "{:.0f}"),
    ]:
        scale = 1 / 1024 if "KiB" in name else 1
        rows.append(
            (
                name,
                f"{fmt.format(wide[key] * scale)} | {fmt.format(narrow[key] * scale)}",
                "= experts" if key == "experts_found" else "",
            )
        )
    per_expert = wide["announce_bytes_per_server"] / (wide["experts"] / options.servers)
    per_expert_narrow = narrow["announce_bytes_per_server"] / (narrow["experts"] / options.servers)
    rows.append(("announce bytes/expert", f"{per_expert:.0f} | {per_expert_narrow:.0f}", ""))
    wide_name, narrow_name = ("x".join(map(str, g)) for g in (options.grid, options.baseline_grid))
    title = (
        f"wide grid {wide_name} | baseline {narrow_name}: {options.servers} servers, "
        f"{options.dht_nodes} DHT nodes, k_best {options.k_best}, batch {options.batch}, latency "
        f"{1e3 * options.latency:.0f} ms, update period {options.update_period:.0f} s "
        "(simulated, virtual time)"
    )
    report(title, rows, {"wide": wide, "baseline": narrow}, options.json)
    if wide["experts_found"] != wide["experts"] or not math.isfinite(wide["step_ms"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
