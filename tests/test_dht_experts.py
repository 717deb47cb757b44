"""Expert records over the DHT: servers announce (``server.announce``), trainers read them
(``client.discovery``); the DHT itself only stores records."""

from __future__ import annotations

import pytest

from tesseract.client.discovery import find_alive_prefixes, get_active_successors, get_experts
from tesseract.dht import DHTConfig, DHTNode
from tesseract.server.announce import announcement_items, declare_experts
from tests.dht_swarm import start_swarm
from tests.worlds import SimWorld, World

FAST = DHTConfig(request_timeout=0.5, operation_timeout=10.0)


def test_expert_declarations_and_beam_search_helpers(world: World) -> None:
    async def main(world: World) -> None:
        nodes = await start_swarm(world, 5, FAST)
        expiration = nodes[0].host.wall_time() + 120
        uids = [f"ffn.{i}.{j}" for i in range(2) for j in range(3)]
        stored = await declare_experts(nodes[0], uids, "127.0.0.1:7000", expiration)
        assert all(stored.values())
        await declare_experts(nodes[1], ["ffn.3.9"], "127.0.0.1:7001", expiration)
        infos = await get_experts(nodes[2], ["ffn.0.1", "ffn.3.9", "ffn.2.2"])
        assert [(i.uid, i.endpoint) if i else None for i in infos] == [
            ("ffn.0.1", "127.0.0.1:7000"),
            ("ffn.3.9", "127.0.0.1:7001"),
            None,
        ]
        successors = await get_active_successors(nodes[3], ["ffn", "ffn.0", "ffn.3", "ffn.7"], grid_size=10)
        assert set(successors["ffn"]) == {0, 1, 3}
        assert set(successors["ffn.0"]) == {0, 1, 2}
        assert successors["ffn.3"] == {9: ("ffn.3.9", "127.0.0.1:7001")}
        assert successors["ffn.7"] == {}
        assert await find_alive_prefixes(nodes[4], ["ffn.7", "ffn.1", "ffn.0"]) == ["ffn.1", "ffn.0"]
        for bad in ("ffn", "ffn.x", "1ffn.2", "ffn.-1", "ffn.01", ""):
            with pytest.raises(ValueError, match="expert uid"):
                await declare_experts(nodes[0], [bad], "127.0.0.1:7000", expiration)

    world.run(main)


def test_grid_size_filters_out_of_grid_successors() -> None:
    async def main(world: World) -> None:
        nodes = await start_swarm(world, 3, FAST)
        expiration = nodes[0].host.wall_time() + 60
        await declare_experts(nodes[0], ["ffn.3.9", "ffn.3.2"], "127.0.0.1:7001", expiration)
        successors = await get_active_successors(nodes[1], ["ffn.3"], grid_size=8)
        assert set(successors["ffn.3"]) == {2}

    SimWorld(seed=1).run(main)


def test_a_prefix_entry_is_announced_once_for_all_the_experts_under_it() -> None:
    uids = [f"ffn.{i}.{j}" for i in range(3) for j in range(4)]
    items, owners = announcement_items(uids, "a:1", 100.0)
    keys = [(key, subkey) for key, _, _, subkey in items]
    assert len(keys) == len(set(keys)) == 12 + 3 + 12  # uids, ffn -> {i}, ffn.i -> {j}
    assert dict(zip(keys, owners, strict=True))[("ffn", 1)] == [f"ffn.1.{j}" for j in range(4)]
    assert dict(zip(keys, items, strict=True))[("ffn", 1)][1] == ["ffn.1.0", "a:1"]


def test_four_thousand_experts_in_one_dimension_are_all_found(world: World) -> None:
    """Defect 3: the prefix record of a 4,096-wide grid is over a datagram; it used to read as absent."""

    async def main(world: World) -> None:
        nodes = await start_swarm(world, 5, FAST)
        expiration = nodes[0].host.wall_time() + 600
        half = 2048
        first = [f"ffn.{i}" for i in range(half)]
        second = [f"ffn.{i}" for i in range(half, 2 * half)]
        assert all((await declare_experts(nodes[0], first, "10.0.0.1:4000", expiration)).values())
        assert all((await declare_experts(nodes[1], second, "10.0.0.2:4000", expiration)).values())
        host = await world.new_host()
        async with DHTNode.start(
            host, [nodes[2].address], config=DHTConfig(client_mode=True, request_timeout=0.5)
        ) as client:
            successors = await get_active_successors(client, ["ffn"], grid_size=2 * half, latest=True)
            assert len(successors["ffn"]) == 2 * half
            assert successors["ffn"][5] == ("ffn.5", "10.0.0.1:4000")
            assert successors["ffn"][4000] == ("ffn.4000", "10.0.0.2:4000")
            assert await find_alive_prefixes(client, ["ffn", "gate"]) == ["ffn"]
        for node in nodes:  # an honest server's announcement is no flood
            assert node.stats["store_flood"] == 0

    world.run(main)
