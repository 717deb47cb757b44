"""Serving a ``Router`` over the host's stream listener.

Many connections, many concurrent requests per connection, a typed error for anything malformed, a
bound on in-flight work, and limits that keep a flood of connections or bytes from locking honest
peers out (``ServerLimits``): connection caps in all and per source address (``Admission``), a budget
for the bytes of unfinished frames shared by all connections (``BufferBudget``), a deadline for a
frame that has begun, and an idle timeout.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio

from tesseract.net.address import parse_address
from tesseract.net.admission import Admission
from tesseract.net.budget import BufferBudget
from tesseract.net.errors import FrameTimeout, FrameTooLarge, ProtocolError
from tesseract.net.framing import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MIN_FRAME_RATE,
    Frame,
    FrameReader,
    send_frame,
)
from tesseract.net.host import Host, Stream
from tesseract.net.messages import ErrorCode, Request, encode_frame, error_reply, split_body
from tesseract.net.router import Router, encode_reply
from tesseract.net.watchdog import Watchdog, shared_watchdog, tick_for

logger = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT_PER_CONNECTION = 256


@dataclass(frozen=True)
class ServerLimits:
    """What one stream server allows its peers. The defaults suit a public expert server."""

    #: Connections in all; lowered to what the host's descriptors allow (``Transport.max_streams``).
    max_connections: int = 4096
    #: Connections from one source address (many trainers behind one NAT share one).
    max_connections_per_address: int = 128
    #: A connection with nothing in flight and no frame begun is closed after this many seconds.
    idle_timeout: float = 300.0
    #: A frame that has begun must keep arriving: ``frame_timeout`` after its first byte, plus its
    #: received bytes at ``min_frame_rate`` (bytes claimed but not sent buy no time).
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    min_frame_rate: float = DEFAULT_MIN_FRAME_RATE
    #: Bytes all connections together may hold for frames not complete yet.
    buffer_budget: int = 256 * 1024 * 1024


class RPCServer:
    """Serves a ``Router`` over the host's streams."""

    def __init__(
        self,
        host: Host,
        router: Router,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_inflight_per_connection: int = DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.host = host
        self.router = router
        self.max_frame_size = max_frame_size
        self.max_inflight = max_inflight_per_connection
        self.limits = limits
        self.budget = BufferBudget(limits.buffer_budget)
        capacity = host.transport.max_streams
        max_connections = min(limits.max_connections, capacity) if capacity else limits.max_connections
        self.admission: Admission[_ServedConnection] = Admission(
            max_connections, limits.max_connections_per_address, idle=_ServedConnection.is_idle
        )
        self.watchdog: Watchdog | None = None  # this run's, once serving

    @property
    def stats(self) -> Counter[str]:
        return self.router.stats

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.watchdog = shared_watchdog(tick_for(self.limits.frame_timeout, self.limits.idle_timeout))
        await self.host.transport.serve_streams(self._serve_connection, task_status=task_status)

    async def _serve_connection(self, stream: Stream) -> None:
        connection = _ServedConnection(stream, self)
        if not self._admit_connection(connection):
            self.stats["connections_refused"] += 1
            message = (
                f"too many connections: at most {self.admission.max_total} in all and "
                f"{self.admission.max_per_source} per address, none of them idle"
            )
            with trio.move_on_after(1.0):
                await self._reply(connection, error_reply(0, ErrorCode.OVERLOADED, message), None)
            return
        watchdog = self.watchdog
        assert watchdog is not None
        watchdog.watch(connection)
        try:
            # No checkpoint between admission and here: a connection that can be shed has its nursery.
            async with trio.open_nursery() as nursery:
                connection.nursery = nursery
                await self._serve_next_request(connection)
            if isinstance(connection.expired, FrameTimeout):
                with trio.move_on_after(1.0):
                    message = str(connection.expired)
                    await self._reply(connection, error_reply(0, ErrorCode.PROTOCOL_ERROR, message), None)
        finally:
            watchdog.forget(connection)
            self.admission.remove(connection)
            connection.reader.close()

    def _admit_connection(self, connection: _ServedConnection) -> bool:
        decision = self.admission.admit(connection, _source(connection.stream.peer))
        for victim in decision.shed:
            self.stats["connections_shed"] += 1
            victim.cancel()  # its handler returns and the transport closes its stream
        return decision.admitted

    def _expire(self, connection: _ServedConnection) -> None:
        """Past its deadline: a frame that trickles (slowloris), or idle too long."""
        if connection.reader.decoder.has_partial_frame:
            connection.expired = connection.reader.frame_timeout_error()
            self.stats[ErrorCode.PROTOCOL_ERROR.value] += 1
            self.stats["frame_timeouts"] += 1
        else:
            self.stats["connections_idle"] += 1
        connection.cancel()

    async def _serve_next_request(self, connection: _ServedConnection) -> None:
        """Read up to the next request, hand the reading on to a new task, then run it in this one.

        Leader and follower: the request starts at once instead of a scheduler pass later, in a
        task of its own, and the connection keeps reading while it runs (a handler may wait long,
        for a batch to fill). At the end of the stream, every unfinished request is cancelled: the
        client is gone, and nobody could receive their replies.
        """
        request = await self._next_request(connection)
        if request is None:
            assert connection.nursery is not None
            connection.nursery.cancel_scope.cancel()
            return
        connection.request_started()
        assert connection.nursery is not None
        connection.nursery.start_soon(self._serve_next_request, connection)
        try:
            envelope, result = await self.router.handle(*request, connection.stream.peer)
            await self._reply(connection, envelope, result)
        finally:
            connection.request_finished()

    async def _next_request(self, connection: _ServedConnection) -> tuple[Request, memoryview] | None:
        """The next request to run, answering any bad frame before it; None once the stream ends."""
        try:
            while (frame := await connection.reader.receive_frame()) is not None:
                request = await self._admit(frame, connection)
                if request is not None:
                    return request
        except ProtocolError as exc:
            # Framing is lost: say why (best effort), then drop the connection.
            code = ErrorCode.FRAME_TOO_LARGE if isinstance(exc, FrameTooLarge) else ErrorCode.PROTOCOL_ERROR
            self.stats[code.value] += 1
            with trio.move_on_after(1.0):
                await self._reply(connection, error_reply(0, code, str(exc)), None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["connection_reset"] += 1
        return None

    async def _admit(self, frame: Frame, connection: _ServedConnection) -> tuple[Request, memoryview] | None:
        """The frame's request and payload; or None, once a frame that is no request to run is answered."""
        try:
            envelope, payload = split_body(memoryview(frame.body), frame.envelope_size)
        except ProtocolError as exc:
            self.stats[ErrorCode.PROTOCOL_ERROR.value] += 1
            await self._reply(connection, error_reply(0, ErrorCode.PROTOCOL_ERROR, str(exc)), None)
            return None
        if not isinstance(envelope, Request):
            self.stats[ErrorCode.PROTOCOL_ERROR.value] += 1
            message = f"expected a request, got {type(envelope).__name__}"
            await self._reply(connection, error_reply(envelope.id, ErrorCode.PROTOCOL_ERROR, message), None)
            return None
        if connection.inflight >= self.max_inflight:
            self.stats[ErrorCode.OVERLOADED.value] += 1
            message = f"more than {self.max_inflight} requests in flight on one connection"
            await self._reply(connection, error_reply(envelope.id, ErrorCode.OVERLOADED, message), None)
            return None
        return envelope, payload

    async def _reply(self, connection: _ServedConnection, envelope: Any, payload: Any) -> None:
        frame = encode_reply(self.router, envelope, payload, encode_frame, max_frame_size=self.max_frame_size)
        try:
            await send_frame(connection.stream, connection.lock, frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["reply_undeliverable"] += 1


def _source(peer: str) -> str:
    """What the per-address cap counts by: an IPv4 address, or an IPv6 address's /64 prefix (one
    subscriber commonly holds a whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        host = parse_address(peer).host
    except ValueError:
        return peer
    if ":" not in host:  # IPv4, or a name (the simulator's): counted as it is, without parsing
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network(f"{address}/64", strict=False))


class _ServedConnection:
    """What the tasks serving one client connection share."""

    __slots__ = (
        "expired",
        "idle_since",
        "idle_timeout",
        "inflight",
        "lock",
        "nursery",
        "reader",
        "server",
        "stream",
    )

    def __init__(self, stream: Stream, server: RPCServer) -> None:
        limits = server.limits
        self.server = server
        self.stream = stream
        self.reader = FrameReader(
            stream,
            server.max_frame_size,
            budget=server.budget,
            frame_timeout=limits.frame_timeout,
            min_frame_rate=limits.min_frame_rate,
        )
        self.idle_timeout = limits.idle_timeout
        self.lock = trio.Lock()  # replies from concurrent requests never interleave
        self.nursery: trio.Nursery | None = None
        self.inflight = 0
        self.idle_since: float | None = None  # None: since the watchdog's next look
        self.expired: FrameTimeout | None = None

    def is_idle(self) -> bool:
        return self.inflight == 0 and not self.reader.decoder.has_partial_frame

    def cancel(self) -> None:
        """Shed the connection, or end it at its deadline: its requests stop, its stream closes."""
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    def expire(self) -> None:
        self.server._expire(self)

    def deadline(self) -> float:
        """When the watchdog ends the connection. Idleness is timed from the first look that finds
        it idle (at most a tick late), which spares a clock reading per request."""
        if self.reader.decoder.has_partial_frame:
            return self.reader.frame_deadline
        if self.inflight:
            return math.inf
        if self.idle_since is None:
            self.idle_since = trio.current_time()
        return self.idle_since + self.idle_timeout

    def request_started(self) -> None:
        self.inflight += 1

    def request_finished(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle_since = None
