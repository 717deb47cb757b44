"""Networking: the host seam, the wire format, and RPC over streams and datagrams.

The tensor helpers load torch on first use, so torch-free users (a DHT-only node) start fast.
"""

from typing import Any

from tesseract.net.address import Address, format_address, parse_address
from tesseract.net.datagram import DatagramRPC
from tesseract.net.errors import (
    CallTimeout,
    FrameTooLarge,
    NetError,
    PeerUnavailable,
    ProtocolError,
    RemoteError,
)
from tesseract.net.host import Bridge, Host, Stream, Transport
from tesseract.net.messages import ErrorCode
from tesseract.net.rpc import Router, RPCClient, RPCServer

__all__ = [
    "Address",
    "Bridge",
    "CallTimeout",
    "DatagramRPC",
    "ErrorCode",
    "FrameTooLarge",
    "Host",
    "NetError",
    "PeerUnavailable",
    "ProtocolError",
    "RPCClient",
    "RPCServer",
    "RemoteError",
    "Router",
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
