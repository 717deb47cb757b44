"""Envelope messages shared by stream and datagram RPC, and how they are laid out in bytes.

A message is an *envelope* (one of ``Request``, ``Response``, ``ErrorReply``: tagged msgspec structs)
followed by an optional *payload* (the method's own tagged struct). The envelope's length is written in
the header, so the payload is decoded straight from the receive buffer: tensors in it are views of
that buffer, never copies.

Stream frame:  ``>IBH`` body length, version, envelope length | envelope | payload
Datagram:      ``>BH``  version, envelope length              | envelope | payload
"""

from __future__ import annotations

import enum
import math
import struct
from typing import Annotated, Any, TypeVar

import msgspec

from tesseract.net.errors import FrameTooLarge, ProtocolError

WIRE_VERSION = 1
FRAME_HEADER = struct.Struct(">IBH")
DATAGRAM_HEADER = struct.Struct(">BH")
MAX_ENVELOPE_SIZE = 0xFFFF
MAX_ERROR_MESSAGE = 2_000

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MethodName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ErrorCode(enum.StrEnum):
    """The errors the RPC layer itself answers with. A layer above defines its own codes and names
    them to its ``Router`` (``error_codes``)."""

    BAD_REQUEST = "bad_request"  # the payload failed validation (type, dtype, shape, size)
    UNKNOWN_METHOD = "unknown_method"
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the call's deadline passed (or had passed on arrival)
    OVERLOADED = "overloaded"  # too many requests in flight on this connection, or connections
    PROTOCOL_ERROR = "protocol_error"  # undecodable envelope or frame, or a frame too slow to arrive
    FRAME_TOO_LARGE = "frame_too_large"
    INTERNAL = "internal"  # the handler failed; its exception text follows


class Request(msgspec.Struct, tag=1, array_like=True):
    id: RequestId
    method: MethodName
    #: Seconds the caller will still wait. Relative, so peers' clocks need not agree.
    timeout: float


class Response(msgspec.Struct, tag=2, array_like=True):
    id: RequestId


class ErrorReply(msgspec.Struct, tag=3, array_like=True):
    id: RequestId
    code: str
    message: str


Envelope = Request | Response | ErrorReply

_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_payload_decoders: dict[type, msgspec.msgpack.Decoder] = {}

P = TypeVar("P")


def error_reply(request_id: int, code: str, message: str) -> ErrorReply:
    return ErrorReply(request_id, str(code), message[:MAX_ERROR_MESSAGE])


def deadline_is_valid(timeout: float) -> bool:
    return math.isfinite(timeout) and timeout > 0


def encode_frame(envelope: Envelope, payload: Any = None, *, max_frame_size: int) -> bytearray:
    """Header, envelope and payload in one buffer, encoded with one copy of any tensor bytes."""
    return _encode(FRAME_HEADER, envelope, payload, max_frame_size)


def encode_datagram(envelope: Envelope, payload: Any = None, *, max_size: int) -> bytearray:
    return _encode(DATAGRAM_HEADER, envelope, payload, max_size)


def _encode(header: struct.Struct, envelope: Envelope, payload: Any, max_size: int) -> bytearray:
    buffer = bytearray(header.size)
    _encoder.encode_into(envelope, buffer, header.size)
    envelope_size = len(buffer) - header.size
    if envelope_size > MAX_ENVELOPE_SIZE:
        raise ProtocolError(f"envelope of {envelope_size} bytes exceeds {MAX_ENVELOPE_SIZE}")
    if payload is not None:
        _encoder.encode_into(payload, buffer, len(buffer))
    body_size = len(buffer) - header.size
    if body_size > max_size:
        raise FrameTooLarge(f"message of {body_size} bytes exceeds the limit of {max_size}")
    if header is FRAME_HEADER:
        FRAME_HEADER.pack_into(buffer, 0, body_size, WIRE_VERSION, envelope_size)
    else:
        DATAGRAM_HEADER.pack_into(buffer, 0, WIRE_VERSION, envelope_size)
    return buffer


def split_datagram(data: bytes | bytearray | memoryview) -> tuple[Envelope, memoryview]:
    """Decode a datagram's envelope; return it with a view of the payload bytes."""
    if len(data) < DATAGRAM_HEADER.size:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than its header")
    version, envelope_size = DATAGRAM_HEADER.unpack_from(data, 0)
    if version != WIRE_VERSION:
        raise ProtocolError(f"unsupported wire version {version} (this node speaks {WIRE_VERSION})")
    view = memoryview(data)[DATAGRAM_HEADER.size :]
    return split_body(view, envelope_size)


def split_body(body: memoryview, envelope_size: int) -> tuple[Envelope, memoryview]:
    """Decode the envelope at the start of a frame body; return it with a view of the payload."""
    if envelope_size > len(body):
        raise ProtocolError(f"envelope length {envelope_size} exceeds the body of {len(body)} bytes")
    try:
        envelope = _envelope_decoder.decode(body[:envelope_size])
    except msgspec.MsgspecError as exc:
        raise ProtocolError(f"undecodable envelope: {exc}") from None
    return envelope, body[envelope_size:]


def decode_payload(payload_type: type[P], view: memoryview) -> P:
    """Decode a payload as ``payload_type``; msgspec errors pass through for the caller to classify."""
    decoder = _payload_decoders.get(payload_type)
    if decoder is None:
        decoder = _payload_decoders[payload_type] = msgspec.msgpack.Decoder(payload_type)
    return decoder.decode(view)
