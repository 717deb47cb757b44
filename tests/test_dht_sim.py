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


def test_found_values_are_cached_at_the_closest_node_that_lacked_them() -> None:
    from tesseract.dht.ids import key_id

    config = DHTConfig(num_replicas=2)

    async def main(network: SimNetwork) -> None:
        nodes = list((await grow_swarm(network, 40, config)).values())
        await trio.sleep(5)
        target = key_id("cached")
        expiration = nodes[0].host.wall_time() + 600
        assert await nodes[0].store("cached", "v", expiration)
        holders = {n.node_id for n in nodes if n.storage.get(target, nodes[0].host.wall_time())}
        reader = next(n for n in nodes if n.node_id not in holders)
        assert (await reader.get("cached", use_local=False)).value == "v"
        await trio.sleep(1)
        now = nodes[0].host.wall_time()
        now_holding = {n.node_id for n in nodes if n.storage.get(target, now)}
        assert len(now_holding) > len(holders)  # someone on the path now caches it

    run_simulation(main, seed=5, latency=0.02)


def test_a_cached_copy_is_not_republished_but_a_replica_is() -> None:
    """Only replicas republish: were every cached copy republished, the traffic would grow with reads."""
    from tesseract.dht.ids import key_id

    config = DHTConfig(num_replicas=2)

    async def main(network: SimNetwork) -> None:
        nodes = list((await grow_swarm(network, 40, config)).values())
        await trio.sleep(5)
        target = key_id("cached")
        assert await nodes[0].store("cached", "v", nodes[0].host.wall_time() + 600)
        now = nodes[0].host.wall_time()
        replicas = [n for n in nodes if n.storage.get(target, now)]
        reader = next(n for n in nodes if n not in replicas)
        assert (await reader.get("cached", use_local=False)).value == "v"
        await trio.sleep(1)
        (cache,) = [n for n in nodes if n not in replicas and n.storage.get(target, now)]
        republished = []
        for node in (cache, replicas[0]):
            node._last_refreshed.clear()  # as if nobody had re-stored it for an interval
            before = node.stats["republished"]
            await node.republish()
            republished.append(node.stats["republished"] - before)
        assert republished == [0, 1]  # the cache's copy, the replica's

    run_simulation(main, seed=5, latency=0.02)


def test_graceful_leave_hands_records_over() -> None:
    config = DHTConfig(num_replicas=1)

    async def main(network: SimNetwork) -> None:
        nodes = list((await grow_swarm(network, 20, config)).values())
        await trio.sleep(5)
        assert await nodes[3].store("handed-over", 42, nodes[0].host.wall_time() + 600)
        from tesseract.dht.ids import key_id

        now = nodes[0].host.wall_time()
        (holder,) = [n for n in nodes if n.storage.get(key_id("handed-over"), now)]
        await holder.leave()
        holder.host.crash()
        reader = next(n for n in nodes if n is not holder and n.host.up)
        found = await reader.get("handed-over", use_local=False)
        assert found is not None and found.value == 42

    run_simulation(main, seed=6, latency=0.02)


def test_unresponsive_peers_are_blacklisted_with_backoff_and_buckets_refresh() -> None:
    config = DHTConfig(request_timeout=1.0, refresh_interval=30.0, republish_interval=60.0)

    async def main(network: SimNetwork) -> None:
        nodes = list((await grow_swarm(network, 30, config)).values())
        dead = nodes[7]
        dead.host.crash()
        probe = nodes[0]
        started = trio.current_time()
        assert not await probe.ping(dead.address)  # one timeout (with its retry)
        assert trio.current_time() - started >= 0.99
        started = trio.current_time()
        assert not await probe.ping(dead.address)  # blacklisted: answered at once
        assert trio.current_time() - started < 0.01
        assert probe.stats["blacklisted_skips"] >= 1
        await trio.sleep(5 * config.refresh_interval)
        now = trio.current_time()
        assert all(
            now - bucket.last_updated < 2 * config.refresh_interval for bucket in probe.routing.buckets
        )
        assert dead.node_id not in probe.routing

    run_simulation(main, seed=7, latency=0.02)
