"""Networking: the host seam, the wire format, and RPC over streams and datagrams."""

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
from tesseract.net.tensors import WireTensor, deserialize_tensor, serialize_tensor

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
    "Transport",
    "WireTensor",
    "deserialize_tensor",
    "format_address",
    "parse_address",
    "serialize_tensor",
]
