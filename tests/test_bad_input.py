"""Malformed input at a live server: a typed error (or a closed connection), counted, and everyone
else keeps being served."""

from __future__ import annotations

import struct

import msgspec
import pytest
import torch
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tesseract.net import RemoteError, RPCClient, RPCServer, serialize_tensor
from tesseract.net.framing import FrameReader
from tesseract.net.messages import FRAME_HEADER, WIRE_VERSION, ErrorReply, Request, encode_frame, split_body
from tesseract.net.tensors import WireTensor
from tests.service import Add, Scale, Sum, Tensor, make_router
from tests.worlds import RealWorld, SimWorld, World

MAX_FRAME = 1 << 16
_encoder = msgspec.msgpack.Encoder()


def frame_with(envelope: bytes, payload: bytes = b"", version: int = WIRE_VERSION) -> bytes:
    return FRAME_HEADER.pack(len(envelope) + len(payload), version, len(envelope)) + envelope + payload


def request_frame(method: str, payload: object) -> bytes:
    return bytes(encode_frame(Request(42, method, 5.0), payload, max_frame_size=MAX_FRAME))


BAD_INPUTS = {
    "garbage": (b"\xde\xad\xbe\xef" * 16, "protocol_error"),
    "oversized_frame": (struct.pack(">IBH", MAX_FRAME + 1, WIRE_VERSION, 0), "frame_too_large"),
    "wrong_version": (frame_with(b"\x90", version=7), "protocol_error"),
    "unknown_message_type": (frame_with(_encoder.encode([99, 1, "x"])), "protocol_error"),
    "envelope_not_msgpack": (frame_with(b"\xc1\xc1\xc1"), "protocol_error"),
    "wrong_typed_field": (request_frame("add", {"type": "add", "a": "one", "b": 2}), "bad_request"),
    "unknown_method": (request_frame("nope", Add(1, 2)), "unknown_method"),
    "tensor_byte_mismatch": (
        request_frame("scale", Scale(WireTensor("float32", (4,), memoryview(b"\0" * 15)))),
        "bad_request",
    ),
    "negative_deadline": (
        bytes(encode_frame(Request(3, "add", -1.0), Add(1, 2), max_frame_size=MAX_FRAME)),
        "deadline_exceeded",
    ),
}


async def raw_exchange(
    world: World, address: str, data: bytes, *, close_after: bool = False
) -> ErrorReply | None:
    """Send raw bytes on a fresh connection; return the server's error reply, if any."""
    host = await world.new_host()
    stream = await host.transport.open_stream(address)
    try:
        await stream.send_all(data)
        if close_after:
            await stream.aclose()
            return None
        with trio.move_on_after(2):
            frame = await FrameReader(stream).receive_frame()
            if frame is None:
                return None
            envelope, _ = split_body(memoryview(frame.body), frame.envelope_size)
            assert isinstance(envelope, ErrorReply), envelope
            return envelope
        return None
    finally:
        await stream.aclose()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_each_kind_of_bad_input_gets_a_typed_reply_and_is_counted(world: World, case: str) -> None:
    data, expected_code = BAD_INPUTS[case]

    async def main(world: World) -> None:
        server_host = await world.new_host()
        server = RPCServer(server_host, make_router(), max_frame_size=MAX_FRAME)
        world.start(server_host, server.serve)
        await trio.sleep(0.05)
        async with RPCClient(await world.new_host()) as good_client:
            assert (await good_client.call(server_host.address, "add", Add(1, 2), Sum, timeout=5)).value == 3
            reply = await raw_exchange(world, server_host.address, data)
            assert reply is not None and reply.code == expected_code, reply
            assert server.stats[expected_code] >= 1
            # The well-behaved client, on its own connection, never noticed.
            assert (await good_client.call(server_host.address, "add", Add(2, 2), Sum, timeout=5)).value == 4

    world.run(main)


def test_truncated_frame_then_close_is_counted_and_harmless(world: World) -> None:
    async def main(world: World) -> None:
        server_host = await world.new_host()
        server = RPCServer(server_host, make_router(), max_frame_size=MAX_FRAME)
        world.start(server_host, server.serve)
        await trio.sleep(0.05)
        frame = request_frame("add", Add(1, 2))
        await raw_exchange(world, server_host.address, frame[: len(frame) // 2], close_after=True)
        with trio.fail_after(5):
            while server.stats["protocol_error"] < 1:
                await trio.sleep(0.01)
        async with RPCClient(await world.new_host()) as client:
            assert (await client.call(server_host.address, "add", Add(5, 5), Sum, timeout=5)).value == 10

    world.run(main)


def test_a_good_request_after_a_bad_one_on_the_same_connection_is_served(world: World) -> None:
    """Payload-level errors keep framing intact, so the connection goes on."""

    async def main(world: World) -> None:
        server_host = await world.new_host()
        world.start(server_host, RPCServer(server_host, make_router()).serve)
        await trio.sleep(0.05)
        stream = await (await world.new_host()).transport.open_stream(server_host.address)
        bad = BAD_INPUTS["wrong_typed_field"][0]
        good = bytes(encode_frame(Request(43, "add", 5.0), Add(20, 22), max_frame_size=MAX_FRAME))
        await stream.send_all(bad + good)
        reader = FrameReader(stream)
        replies = []
        for _ in range(2):
            frame = await reader.receive_frame()
            assert frame is not None
            replies.append(split_body(memoryview(frame.body), frame.envelope_size)[0])
        assert {type(r).__name__ for r in replies} == {"ErrorReply", "Response"}
        await stream.aclose()

    world.run(main)


def test_oversized_reply_becomes_a_typed_error(world: World) -> None:
    async def main(world: World) -> None:
        server_host = await world.new_host()
        world.start(server_host, RPCServer(server_host, make_router(), max_frame_size=100_000).serve)
        await trio.sleep(0.05)
        async with RPCClient(await world.new_host()) as client:
            # 30 kB of uint8 in; scaling by a float gives 120 kB of float32 back, over the 100 kB limit.
            small = Scale(serialize_tensor(torch.ones(30_000, dtype=torch.uint8)), factor=1.5)
            with pytest.raises(RemoteError) as info:
                await client.call(server_host.address, "scale", small, Tensor, timeout=5)
            assert info.value.code == "frame_too_large"

    world.run(main)


@given(
    garbage=st.binary(max_size=4000),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
    seed=st.integers(0, 1000),
)
def test_arbitrary_bytes_in_any_chunking_never_hurt_a_live_server(
    garbage: bytes, cuts: list[int], seed: int
) -> None:
    world = SimWorld(seed=seed)

    async def main(world: World) -> None:
        server_host = await world.new_host()
        server = RPCServer(server_host, make_router(), max_frame_size=MAX_FRAME)
        world.start(server_host, server.serve)
        await trio.sleep(0.01)
        attacker = await world.new_host()
        stream = await attacker.transport.open_stream(server_host.address)
        start = 0
        for cut in [*sorted({min(c, len(garbage)) for c in cuts}), len(garbage)]:
            try:
                await stream.send_all(garbage[start:cut])
            except trio.BrokenResourceError:
                break  # the server already gave up on this connection
            start = cut
            await trio.sleep(0.001)
        async with RPCClient(await world.new_host()) as client:
            with trio.fail_after(5):
                assert (await client.call(server_host.address, "add", Add(1, 1), Sum, timeout=5)).value == 2
        await stream.aclose()

    world.run(main)


@settings(max_examples=25)
@given(garbage=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=4))
def test_arbitrary_bytes_at_a_real_loopback_server(garbage: bytes, cuts: list[int]) -> None:
    world = RealWorld()

    async def main(world: World) -> None:
        server_host = await world.new_host()
        world.start(server_host, RPCServer(server_host, make_router(), max_frame_size=MAX_FRAME).serve)
        await trio.sleep(0.01)
        stream = await (await world.new_host()).transport.open_stream(server_host.address)
        start = 0
        for cut in [*sorted({min(c, len(garbage)) for c in cuts}), len(garbage)]:
            try:
                await stream.send_all(garbage[start:cut])
            except trio.BrokenResourceError:
                break
            start = cut
        async with RPCClient(await world.new_host()) as client:
            with trio.fail_after(5):
                assert (await client.call(server_host.address, "add", Add(1, 1), Sum, timeout=5)).value == 2
        await stream.aclose()

    world.run(main)
