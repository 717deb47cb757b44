"""Networking: the host seam, the wire format, and RPC over streams and datagrams.

The tensor helpers load torch on first use, so torch-free users (a DHT-only node) start fast.
"""

from typing import Any

from tesseract.net.address import Address, format_address, parse_address
from tesseract.net.budget import BufferBudget
from tesseract.net.datagram import DatagramRPC
from tesseract.net.errors import (
    CallTimeout,
    FrameTimeout,
    FrameTooLarge,
    NetError,
    PeerUnavailable,
    ProtocolError,
    RemoteError,
    TensorError,
)
from tesseract.net.host import Bridge, Host, Stream, Transport
from tesseract.net.messages import ErrorCode
from tesseract.net.router import Router
from tesseract.net.stream_client import RPCClient
from tesseract.net.stream_server import RPCServer, ServerLimits

__all__ = [
    "Address",
    "Bridge",
    "BufferBudget",
    "CallTimeout",
    "DatagramRPC",
    "ErrorCode",
    "FrameTimeout",
    "FrameTooLarge",
    "Host",
    "NetError",
    "PeerUnavailable",
    "ProtocolError",
    "RPCClient",
    "RPCServer",
    "RemoteError",
    "Router",
    "ServerLimits",
    "Stream",
    "TensorError",
    "Transport",
    "WireTensor",
    "deserialize_tensor",
    "format_address",
    "parse_address",
    "serialize_tensor",
]


_TENSOR_NAMES = {"WireTensor", "deserialize_tensor", "serialize_tensor"}


def __getattr__(name: str) -> Any:
    if name in _TENSOR_NAMES:
        from tesseract.net import tensors

        return getattr(tensors, name)
    raise AttributeError(f"module 'tesseract.net' has no attribute {name!r}")
