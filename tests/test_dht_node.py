"""DHT nodes over real loopback and in the simulator: the API, replication, and bad input."""

from __future__ import annotations

import msgspec
import pytest
import trio

from tesseract.dht import BootstrapError, DHTConfig, DHTNode
from tesseract.dht import protocol as wire
from tesseract.dht.ids import id_to_bytes, key_id
from tesseract.net import DatagramRPC, RemoteError, Router
from tests.dht_swarm import start_swarm
from tests.worlds import World

FAST = DHTConfig(request_timeout=0.5, operation_timeout=5.0)


def test_store_anywhere_get_everywhere(world: World) -> None:
    async def main(world: World) -> None:
        nodes = await start_swarm(world, 8, FAST)
        expiration = nodes[0].host.wall_time() + 300
        for i, node in enumerate(nodes):
            assert await node.store(f"key-{i}", {"from": i, "data": [1, 2, 3]}, expiration)
        for node in nodes:
            for i in range(len(nodes)):
                found = await node.get(f"key-{i}")
                assert found is not None and found.value == {"from": i, "data": [1, 2, 3]}
                assert found.expiration == pytest.approx(expiration)
        assert await nodes[3].get("never-stored") is None

    world.run(main)


def test_newest_wins_and_dictionaries_merge(world: World) -> None:
    async def main(world: World) -> None:
        nodes = await start_swarm(world, 6, FAST)
        now = nodes[0].host.wall_time()
        assert await nodes[0].store("plain", "old", now + 100)
        assert await nodes[1].store("plain", "new", now + 200)
        assert await nodes[2].store("plain", "stale", now + 150)  # outdated: replicas keep "new"
        assert (await nodes[4].get("plain", latest=True)).value == "new"
        for subkey, node in enumerate(nodes[:4]):
            assert await node.store("dict", f"v{subkey}", now + 100 + subkey, subkey=subkey)
        found = await nodes[5].get("dict", latest=True)
        assert found.is_dictionary and found.value is None
        assert {k: v.value for k, v in found.subkeys.items()} == {0: "v0", 1: "v1", 2: "v2", 3: "v3"}
        # A plain value that happens to be a dict is not mistaken for a dictionary record.
        assert await nodes[0].store("a-dict-value", {"x": 1}, now + 100)
        found = await nodes[3].get("a-dict-value")
        assert not found.is_dictionary and found.value == {"x": 1}

    world.run(main)


def test_bootstrap_with_no_live_peer_is_a_clear_error(world: World) -> None:
    async def main(world: World) -> None:
        dead = await world.new_host()
        address = dead.address
        await world.crash(dead)
        host = await world.new_host()
        with pytest.raises(BootstrapError, match="none of the 1 initial peers answered"):
            async with DHTNode.start(host, [address], config=FAST):
                pass
        with pytest.raises(ValueError, match="bad address"):
            async with DHTNode.start(host, ["not-an-address"], config=FAST):
                pass

    world.run(main)


def test_bad_store_items_are_rejected_with_reasons_and_counted(world: World) -> None:
    async def main(world: World) -> None:
        (node,) = await start_swarm(world, 1, DHTConfig(store_rate=1.0, store_burst=40.0))
        client_host = await world.new_host()
        client = DatagramRPC(client_host, Router())
        world.start(client_host, client.serve)
        await trio.sleep(0.05)
        now = node.host.wall_time()
        sender = id_to_bytes(12345)

        def item(key: str, value: bytes = b"\x01", ttl: float = 60.0) -> wire.StoreItem:
            return wire.StoreItem(id_to_bytes(key_id(key)), None, value, now + ttl)

        items = [
            item("fine"),
            item("past", ttl=-10),
            item("far", ttl=10 * 365 * 24 * 3600),
            item("huge", value=b"x" * 5000),
            item("fine", ttl=30),  # older than what is stored: must not overwrite it
        ]
        reply = await client.call(
            node.address, "dht.store", wire.StoreRequest(sender, now, items), wire.StoreResponse, timeout=2
        )
        assert reply.results == ["stored", "expired", "too_far", "too_large", "outdated"]
        assert node.storage.get(key_id("fine"), now).value.expiration == pytest.approx(now + 60)
        for reason in ("stored", "expired", "too_far", "too_large", "outdated"):
            assert node.stats[f"store_{reason}"] >= 1

        # A flood: the token bucket (burst 40, 1/s) refuses what exceeds it, the node keeps working.
        flood = [item(f"flood-{i}") for i in range(32)]
        results = []
        for _ in range(2):
            reply = await client.call(
                node.address,
                "dht.store",
                wire.StoreRequest(sender, now, flood),
                wire.StoreResponse,
                timeout=2,
            )
            results += reply.results
        assert results.count("flood") >= 20 and node.stats["store_flood"] >= 20

        # Malformed requests: a key of the wrong length, a wrong type: typed errors, counted.
        bad = msgspec.msgpack.encode({"type": "dht.find", "sender": sender, "time": now, "keys": [b"short"]})
        with pytest.raises(RemoteError) as info:
            await client.call(node.address, "dht.find", msgspec.Raw(bad), wire.FindResponse, timeout=2)
        assert info.value.code == "bad_request"
        with pytest.raises(RemoteError) as info:
            await client.call(
                node.address, "dht.find", wire.PingRequest(sender, now), wire.FindResponse, timeout=2
            )
        assert info.value.code == "bad_request"

        # A peer whose clock is 60 s off is told so and not added to the routing table.
        with pytest.raises(RemoteError) as info:
            await client.call(
                node.address,
                "dht.ping",
                wire.PingRequest(id_to_bytes(999), now + 60),
                wire.PingResponse,
                timeout=2,
            )
        assert info.value.code == "clock_skew" and 999 not in node.routing
        assert await client.call(
            node.address,
            "dht.ping",
            wire.PingRequest(id_to_bytes(998), node.host.wall_time()),
            wire.PingResponse,
            timeout=2,
        )
        assert 998 in node.routing

    world.run(main)


def test_a_client_mode_node_asks_but_is_never_asked_or_routed_to(world: World) -> None:
    async def main(world: World) -> None:
        nodes = await start_swarm(world, 6)
        host = await world.new_host()
        async with DHTNode.start(host, [nodes[0].address], config=DHTConfig(client_mode=True)) as client:
            assert await client.store("from-a-client", {"n": 1}, host.wall_time() + 600)
            assert (await nodes[3].get("from-a-client", use_local=False)).value == {"n": 1}
            await nodes[2].store("from-a-server", 7, host.wall_time() + 600)
            assert (await client.get("from-a-server")).value == 7
            assert len(client.storage) == 0  # it holds nothing, so leaving loses nothing
            assert len(client.routing) > 0  # it knows the swarm ...
            for node in nodes:  # ... and the swarm does not know it
                assert client.node_id not in {
                    peer.node_id for peer in node.routing.nearest(client.node_id, 100)
                }
            probe = DatagramRPC(await world.new_host(), Router())
            world.start(probe.host, probe.serve)
            with pytest.raises(RemoteError, match="unknown_method"):
                ping = wire.PingRequest(id_to_bytes(1), host.wall_time())
                await probe.call(client.address, "dht.ping", ping, wire.PingResponse, timeout=2)
        bad = wire.PingRequest(b"\x01" * 7, nodes[0].host.wall_time())
        with pytest.raises(RemoteError, match="sender id has 20 bytes, not 7"):
            await probe.call(nodes[0].address, "dht.ping", bad, wire.PingResponse, timeout=2)

    world.run(main)
