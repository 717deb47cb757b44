"""Datagram RPC (the DHT's transport): calls, retries, timeouts, and hostile datagrams."""

from __future__ import annotations

import pytest
import trio

from tesseract.net import CallTimeout, DatagramRPC, RemoteError, Router
from tesseract.net.messages import Response, encode_datagram
from tests.service import Add, Empty, Sleep, Sum, make_router
from tests.worlds import SimWorld, World


async def start_node(world: World, router: Router | None = None) -> DatagramRPC:
    host = await world.new_host()
    rpc = DatagramRPC(host, router or make_router())
    world.start(host, rpc.serve)
    await trio.sleep(0.02)
    return rpc


def test_call_and_typed_errors(world: World) -> None:
    async def main(world: World) -> None:
        server, client = await start_node(world), await start_node(world, Router())
        address = server.host.address
        assert (await client.call(address, "add", Add(40, 2), Sum, timeout=2)).value == 42
        with pytest.raises(RemoteError) as info:
            await client.call(address, "nope", Empty(), Empty, timeout=2)
        assert info.value.code == "unknown_method"
        with pytest.raises(RemoteError) as info:
            await client.call(address, "add", Sleep(1.0), Sum, timeout=2)
        assert info.value.code == "bad_request"

    world.run(main)


def test_timeout_when_nobody_answers(world: World) -> None:
    async def main(world: World) -> None:
        client = await start_node(world, Router())
        silent = await world.new_host()  # bound, but serves nothing
        started = trio.current_time()
        with pytest.raises(CallTimeout):
            await client.call(silent.address, "add", Add(1, 1), Sum, timeout=0.4, retries=1)
        assert 0.35 <= trio.current_time() - started < 2
        assert client.stats["retries"] == 1 and client.stats["timeouts"] == 1

    world.run(main)


def test_malformed_and_spoofed_datagrams_are_ignored_and_counted(world: World) -> None:
    async def main(world: World) -> None:
        server, client = await start_node(world), await start_node(world, Router())
        attacker = await world.new_host()
        for junk in (b"", b"\x01", b"\x07\x00\x00", b"\x01\x00\x05abc", b"\xff" * 100):
            await attacker.transport.send_datagram(server.host.address, junk)
        # A "reply" to a call the client never made, and one claiming to come from elsewhere.
        forged = encode_datagram(Response(12345), Sum(1), max_size=60_000)
        await attacker.transport.send_datagram(client.host.address, forged)
        await trio.sleep(0.1)
        assert server.stats["malformed"] == 5
        assert client.stats["unmatched_replies"] == 1
        assert (await client.call(server.host.address, "add", Add(1, 2), Sum, timeout=2)).value == 3

    world.run(main)


def test_retries_ride_out_loss_in_the_simulator() -> None:
    world = SimWorld(seed=3, loss=0.3)

    async def main(world: World) -> None:
        server, client = await start_node(world), await start_node(world, Router())
        answered = 0
        for i in range(200):
            try:
                reply = await client.call(server.host.address, "add", Add(i, 1), Sum, timeout=0.3, retries=3)
                assert reply.value == i + 1
                answered += 1
            except CallTimeout:
                pass
        # Each try is lost with p = 1 - 0.7**2 = 0.51; four tries all fail with p = 0.07.
        assert 170 <= answered < 200
        assert client.stats["retries"] > 50

    world.run(main)
