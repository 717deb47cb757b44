"""The DHT at scale and under faults, in the simulator."""

from __future__ import annotations

import random

import trio

from simulator import SimNetwork, Uniform, run_simulation
from tesseract.dht import DHTConfig, DHTNode
from tesseract.dht.ids import random_id


async def grow_swarm(
    network: SimNetwork, count: int, config: DHTConfig, join_gap: float = 0.02
) -> dict[int, DHTNode]:
    """``count`` nodes joining one after another through random earlier nodes; host index -> node."""
    nodes: dict[int, DHTNode] = {}
    hosts = network.add_hosts(count)
    rng = random.Random(network.seed)

    async def run(host, peers: list[str]) -> None:
        async with DHTNode.start(host, peers, config=config, leave_gracefully=False) as node:
            nodes[host.index] = node
            await trio.sleep_forever()

    hosts[0].start(run, hosts[0], [])
    await trio.sleep(join_gap)
    for i, host in enumerate(hosts[1:], start=1):
        host.start(run, host, [hosts[rng.randrange(i)].address])
        await trio.sleep(join_gap)
    with trio.fail_after(120):
        while len(nodes) < count:
            await trio.sleep(0.5)
    return nodes


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def test_thousand_node_lookups_match_brute_force_and_every_key_is_found() -> None:
    config = DHTConfig(request_timeout=1.0)
    scores: list[float] = []
    found: list[bool] = []

    async def main(network: SimNetwork) -> None:
        nodes = await grow_swarm(network, 1000, config)
        await trio.sleep(30)  # let the last joiners be seen
        rng = random.Random(1)
        everyone = [node.node_id for node in nodes.values()]
        members = list(nodes.values())
        for _ in range(40):
            target = random_id(rng)
            start = rng.choice(members)
            result = {peer.node_id for peer in await start.find_nodes(target)}
            truth = set(sorted((n for n in everyone if n != start.node_id), key=lambda n: n ^ target)[:20])
            scores.append(jaccard(result, truth))
        expiration = members[0].host.wall_time() + 3600
        keys = [f"key-{i}" for i in range(100)]
        for key in keys:
            assert await rng.choice(members).store(key, key.upper(), expiration)
        for key in keys:
            value = await rng.choice(members).get(key)
            found.append(value is not None and value.value == key.upper())

    run_simulation(main, seed=3, latency=Uniform(0.01, 0.06))
    assert sum(scores) / len(scores) >= 0.95, scores
    assert all(found)


def test_records_survive_crashes_loss_and_a_healed_partition() -> None:
    config = DHTConfig(
        request_timeout=1.0, operation_timeout=8.0, republish_interval=60.0, refresh_interval=120.0
    )
    results: dict[str, list] = {"found": [], "durations": []}

    async def main(network: SimNetwork) -> None:
        nodes = await grow_swarm(network, 300, config)
        await trio.sleep(20)
        rng = random.Random(2)
        members = list(nodes.values())
        expiration = members[0].host.wall_time() + 7200
        keys = [f"record-{i}" for i in range(150)]
        for key in keys:
            assert await rng.choice(members).store(key, key, expiration)

        async def timed_gets(duration: float) -> None:
            """Reads during the faults: each may fail, none may outlive its deadline."""
            end = trio.current_time() + duration
            while trio.current_time() < end:
                alive = [n for n in members if n.host.up]
                started = trio.current_time()
                await rng.choice(alive).get(rng.choice(keys))
                results["durations"].append(trio.current_time() - started)

        network.set_default_loss(0.05)
        for node in rng.sample(members, 90):  # 30% crash at once
            node.host.crash()
        survivors = [n for n in members if n.host.up]
        addresses = [n.address for n in survivors]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed_gets, 120.0)
            await trio.sleep(20)
            network.partition(addresses[: len(addresses) // 2])
            await trio.sleep(30)
            network.heal()
        await trio.sleep(2 * config.republish_interval + 30)
        for key in keys:
            found = await rng.choice(survivors).get(key)
            results["found"].append(found is not None and found.value == key)

    run_simulation(main, seed=4, latency=Uniform(0.01, 0.06))
    assert all(results["found"]), f"{results['found'].count(False)} of {len(results['found'])} records lost"
    assert results["durations"] and max(results["durations"]) <= config.operation_timeout + 0.01
