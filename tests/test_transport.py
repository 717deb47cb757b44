"""The transport itself (streams and datagrams), over real loopback and in the simulator."""

from __future__ import annotations

import pytest
import trio

from tesseract.net import PeerUnavailable
from tesseract.net.host import Stream
from tests.worlds import RealWorld, World


async def echo_handler(stream: Stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def receive_exactly(stream: Stream, count: int) -> bytes:
    chunks, received = [], 0
    while received < count:
        data = await stream.receive_some()
        assert data, "stream ended early"
        chunks.append(data)
        received += len(data)
    return b"".join(chunks)


def test_stream_echo_small_and_large(world: World) -> None:
    async def main(world: World) -> None:
        server = await world.new_host()
        world.start(server, server.transport.serve_streams, echo_handler)
        await trio.sleep(0.05)
        client = await world.new_host()
        stream = await client.transport.open_stream(server.address)
        await stream.send_all(b"hello")
        assert await receive_exactly(stream, 5) == b"hello"
        payload = bytes(range(256)) * 40_000  # ~10 MB, many segments
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, payload)
            assert await receive_exactly(stream, len(payload)) == payload
        await stream.aclose()

    world.run(main)


def test_sending_on_a_closed_stream_is_a_clear_error_never_a_write_elsewhere(world: World) -> None:
    """A closed stream's descriptor may be reused by the next connection: a late send must fail."""

    async def main(world: World) -> None:
        server = await world.new_host()
        world.start(server, server.transport.serve_streams, echo_handler)
        await trio.sleep(0.05)
        client = await world.new_host()
        old = await client.transport.open_stream(server.address)
        await old.aclose()
        new = await client.transport.open_stream(server.address)  # may take the old number
        with pytest.raises(trio.ClosedResourceError):
            await old.send_all(b"late")
        await new.send_all(b"fresh")
        assert await receive_exactly(new, 5) == b"fresh"
        await new.aclose()

    world.run(main)


def test_receive_into_fills_a_caller_buffer(world: World) -> None:
    async def main(world: World) -> None:
        server = await world.new_host()
        world.start(server, server.transport.serve_streams, echo_handler)
        await trio.sleep(0.05)
        stream = await (await world.new_host()).transport.open_stream(server.address)
        await stream.send_all(b"0123456789")
        buffer = bytearray(10)
        filled = 0
        while filled < 10:
            filled += await stream.receive_into(memoryview(buffer)[filled:])
        assert buffer == b"0123456789"
        await stream.aclose()

    world.run(main)


def test_end_of_stream_is_seen_by_the_peer(world: World) -> None:
    async def main(world: World) -> None:
        got: list[bytes] = []
        done = trio.Event()

        async def collect(stream: Stream) -> None:
            while data := await stream.receive_some():
                got.append(data)
            done.set()

        server = await world.new_host()
        world.start(server, server.transport.serve_streams, collect)
        await trio.sleep(0.05)
        stream = await (await world.new_host()).transport.open_stream(server.address)
        await stream.send_all(b"abc")
        await stream.aclose()
        with trio.fail_after(5):
            await done.wait()
        assert b"".join(got) == b"abc"

    world.run(main)


def test_datagrams_carry_sender_address(world: World) -> None:
    async def main(world: World) -> None:
        a, b = await world.new_host(), await world.new_host()
        await a.transport.send_datagram(b.address, b"ping")
        with trio.fail_after(5):
            data, sender = await b.transport.receive_datagram()
        assert data == b"ping" and sender == a.address
        await b.transport.send_datagram(sender, b"pong")
        with trio.fail_after(5):
            data, sender = await a.transport.receive_datagram()
        assert data == b"pong" and sender == b.address

    world.run(main)


def test_connecting_to_a_dead_address_fails_fast(world: World) -> None:
    async def main(world: World) -> None:
        dead = await world.new_host()
        address = dead.address
        await world.crash(dead)
        client = await world.new_host()
        with trio.fail_after(5), pytest.raises(PeerUnavailable):
            await client.transport.open_stream(address)

    world.run(main)


def test_ipv6_loopback() -> None:
    world = RealWorld(bind="[::1]:0")

    async def main(world: World) -> None:
        server = await world.new_host()
        assert server.address.startswith("[::1]:")
        world.start(server, server.transport.serve_streams, echo_handler)
        await trio.sleep(0.05)
        client = await world.new_host()
        stream = await client.transport.open_stream(server.address)
        await stream.send_all(b"v6")
        assert await receive_exactly(stream, 2) == b"v6"
        await stream.aclose()
        await client.transport.send_datagram(server.address, b"dgram")
        with trio.fail_after(5):
            data, sender = await server.transport.receive_datagram()
        assert data == b"dgram" and sender == client.address

    try:
        world.run(main)
    except OSError as exc:  # pragma: no cover - a machine without IPv6 loopback
        pytest.skip(f"no IPv6 loopback: {exc}")
