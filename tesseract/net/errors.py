"""Errors that cross the network seam, one type per thing a caller can act on."""

from __future__ import annotations


class NetError(Exception):
    """Base of every networking error Tesseract raises."""


class ProtocolError(NetError):
    """Bytes from a peer break the wire format (bad version, truncated or garbage frame)."""


class FrameTooLarge(ProtocolError):
    """A frame (or datagram) is larger than the configured hard limit."""


class FrameTimeout(ProtocolError):
    """A frame began to arrive and did not complete within its deadline (a peer trickling bytes)."""


class CallTimeout(NetError, TimeoutError):
    """A call did not complete before its deadline."""


class PeerUnavailable(NetError, ConnectionError):
    """The peer could not be reached, refused the connection, or the connection broke mid-call."""


class RemoteError(NetError):
    """The peer answered with a typed error reply.

    ``code`` is one of ``ErrorCode``'s values; ``message`` is the peer's explanation.
    """

    def __init__(self, code: str, message: str, *, peer: str | None = None) -> None:
        self.code = code
        self.message = message
        self.peer = peer
        where = f" from {peer}" if peer else ""
        super().__init__(f"{code}{where}: {message}")


class TensorError(ValueError):
    """A tensor message is inconsistent: unknown dtype, bad shape, or wrong byte count."""
