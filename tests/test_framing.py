"""The sans-IO frame decoder under any chunking, and against garbage."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tesseract.net.errors import FrameTooLarge, ProtocolError
from tesseract.net.framing import DEFAULT_MAX_FRAME_SIZE, GROWTH, MIN_GROWTH, FrameDecoder
from tesseract.net.messages import FRAME_HEADER, WIRE_VERSION, Request, encode_frame, split_body
from tests.service import Add


def raw_frame(body: bytes, envelope_size: int = 0, version: int = WIRE_VERSION) -> bytes:
    return FRAME_HEADER.pack(len(body), version, envelope_size) + body


def decode_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(bytes(frame.body))
    return frames


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@given(
    bodies=st.lists(st.binary(max_size=300_000), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2_000_000), max_size=40),
)
def test_any_split_of_the_byte_stream_gives_the_same_frames(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(raw_frame(body) for body in bodies)
    decoder = FrameDecoder(max_frame_size=1 << 20)
    assert decode_all(decoder, split_at(stream, cuts)) == bodies
    assert not decoder.has_partial_frame


def receive_into_tail(decoder: FrameDecoder, piece: bytes) -> None:
    """What FrameReader does with bytes for an unfinished frame: grow its buffer, then fill the tail."""
    while piece:
        tail = decoder.writable_tail()
        assert tail is not None
        if not tail:
            decoder.grow()
            continue
        take = min(len(tail), len(piece))
        tail[:take] = piece[:take]
        decoder.advance(take)
        piece = piece[take:]


@given(body=st.binary(min_size=1, max_size=200_000), cuts=st.lists(st.integers(0, 200_010), max_size=10))
def test_receive_into_the_tail_matches_feeding(body: bytes, cuts: list[int]) -> None:
    """The zero-copy path (writable_tail + grow + advance) assembles the same frame as feed()."""
    data = raw_frame(body)
    decoder = FrameDecoder()
    decoder.feed(data[: FRAME_HEADER.size + 1])
    rest = data[FRAME_HEADER.size + 1 :]
    for piece in split_at(rest, cuts):
        receive_into_tail(decoder, piece)
    frame = decoder.next_frame()
    assert frame is not None and bytes(frame.body) == body
    assert decoder.buffered == 0


def test_a_header_claiming_the_largest_frame_costs_nothing_until_bytes_arrive() -> None:
    """Defect 1: a 7-byte header claiming 256 MiB took 256 MiB at once."""
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">IBH", DEFAULT_MAX_FRAME_SIZE, WIRE_VERSION, 0) + b"x" * 100)
    assert decoder.claimed == DEFAULT_MAX_FRAME_SIZE
    assert decoder.buffered == 100
    decoder.feed(b"y" * 1000)
    assert decoder.buffered <= GROWTH * (1100 + MIN_GROWTH)


@settings(max_examples=30)
@given(
    size=st.integers(1, 3 << 20),
    pieces=st.lists(st.integers(1, 300_000), min_size=1, max_size=40),
    zero_copy=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_memory_follows_the_bytes_received_not_the_bytes_claimed(
    size: int, pieces: list[int], zero_copy: list[bool]
) -> None:
    """At every step, the unfinished frame holds at most GROWTH times what arrived of it, plus a step."""
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">IBH", size, WIRE_VERSION, 0))
    received = 0
    for i, count in enumerate(pieces):
        count = min(count, size - received)
        if zero_copy[i % len(zero_copy)]:
            receive_into_tail(decoder, b"z" * count)
        else:
            decoder.feed(b"z" * count)
        received += count
        if received == size:
            break
        assert decoder.buffered <= GROWTH * (received + MIN_GROWTH)
        assert decoder.missing == size - received
    if received == size:
        frame = decoder.next_frame()
        assert frame is not None and len(frame.body) == size and decoder.buffered == 0


def test_oversized_frame_is_rejected_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">IBH", 1001, WIRE_VERSION, 0))
    with pytest.raises(FrameTooLarge):  # and it stays failed
        decoder.feed(b"more")


def test_wrong_version_and_inconsistent_envelope_length() -> None:
    with pytest.raises(ProtocolError, match="version"):
        FrameDecoder().feed(raw_frame(b"abc", version=99))
    with pytest.raises(ProtocolError, match="envelope length"):
        FrameDecoder().feed(raw_frame(b"abc", envelope_size=4))


def test_truncated_frame_is_visible() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"x" * 100)[:50])
    assert decoder.next_frame() is None and decoder.has_partial_frame


@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=8))
def test_garbage_never_escapes_as_anything_but_a_protocol_error(garbage: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    try:
        for chunk in split_at(garbage, cuts):
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                with contextlib.suppress(ProtocolError):
                    split_body(memoryview(frame.body), frame.envelope_size)
    except ProtocolError:
        pass


def test_encoded_frames_decode_to_their_envelope_and_payload() -> None:
    from tesseract.net.messages import decode_payload

    frame = encode_frame(Request(7, "add", 1.5), Add(2, 3), max_frame_size=1 << 20)
    decoder = FrameDecoder()
    decoder.feed(frame)
    decoded = decoder.next_frame()
    assert decoded is not None
    envelope, payload = split_body(memoryview(decoded.body), decoded.envelope_size)
    assert envelope == Request(7, "add", 1.5)
    assert decode_payload(Add, payload) == Add(2, 3)


def test_encoder_refuses_frames_over_the_limit() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(Request(1, "add", 1.0), Add(1, 2), max_frame_size=4)
