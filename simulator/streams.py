"""Simulated streams: a connection is two pipes, one per direction, filled by the network's pump.

Each ``send_all`` is one message on the link; at its arrival tick the pump appends it to the peer's
pipe, which wakes a parked reader by rescheduling it directly (no timer, no extra task).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import outcome
import trio

from simulator.trace import KIND_STREAM
from tesseract.net.host import Stream


class Wire(Protocol):
    """What streams and transports need of the network: sending a message."""

    def schedule(
        self,
        src: int,
        dst: int,
        nbytes: int,
        deliver: Callable[[Any], None],
        payload: Any,
        kind: int,
        in_order: Pipe | None = None,
    ) -> bool: ...


class StreamHost(Protocol):
    """What a stream needs of the host at either end."""

    index: int
    up: bool
    incarnation: int
    #: The host's open streams, insertion-ordered so that a crash resets them in a fixed order.
    streams: dict[SimStream, None]

    @property
    def network(self) -> Wire: ...


class Parking:
    """At most one task parked on something; woken by rescheduling it directly."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: trio.lowlevel.Task | None = None

    async def park(self) -> Any:
        self.waiter = trio.lowlevel.current_task()
        return await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self, value: Any = None) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task, outcome.Value(value))


class Pipe(Parking):
    """One direction of a connection, as seen by its reader."""

    __slots__ = ("chunks", "eof", "error", "incarnation", "last_arrival", "offset", "owner")

    def __init__(self, owner: StreamHost) -> None:
        super().__init__()
        self.owner = owner
        self.incarnation = owner.incarnation
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # bytes of chunks[0] already read
        self.eof = False
        self.error: BaseException | None = None
        #: When the latest data sent into this pipe arrives: later data never arrives before it (TCP
        #: delivers in order, whatever each segment's latency or retransmissions).
        self.last_arrival = 0.0

    def alive(self) -> bool:
        return self.owner.up and self.owner.incarnation == self.incarnation

    def deliver(self, data: bytes) -> None:
        if self.alive() and self.error is None:
            self.chunks.append(data)
            self.wake()

    def deliver_eof(self, _: Any = None) -> None:
        self.eof = True
        self.wake()

    def deliver_reset(self, _: Any = None) -> None:
        if self.error is None:
            self.error = trio.BrokenResourceError("connection reset by peer")
        self.wake()


class SimStream(Stream):
    """One end of a simulated connection. Build both ends with ``connected_pair``."""

    def __init__(self, host: StreamHost, remote: StreamHost, inbound: Pipe, peer: str) -> None:
        self._host = host
        self._remote = remote
        self._inbound = inbound
        self._outbound: Pipe | None = None  # set by connected_pair
        self._peer = peer
        self._closed = False
        self._receiving = False  # a task is parked in receive_some or receive_into
        host.streams[self] = None

    @property
    def peer(self) -> str:
        return self._peer

    def _check_writable(self) -> Pipe:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._inbound.error is not None:
            raise trio.BrokenResourceError("connection reset by peer")
        if not self._host.up:
            raise trio.BrokenResourceError("host crashed")
        assert self._outbound is not None
        return self._outbound

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        outbound = self._check_writable()
        if not data:
            return
        payload = bytes(data)
        self._host.network.schedule(
            self._host.index,
            self._remote.index,
            len(payload),
            outbound.deliver,
            payload,
            KIND_STREAM,
            outbound,
        )

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")

    async def _readable(self) -> Pipe | None:
        """Wait until there is data (return the pipe), EOF (None), or an error (raise)."""
        if self._receiving:
            # A second reader would take the first one's place in the pipe and leave it parked forever.
            raise trio.BusyResourceError("another task is already receiving on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._inbound
        if pipe.chunks and not self._closed:
            return pipe  # the common case: data waiting
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            if pipe.chunks:
                return pipe
            if pipe.error is not None:
                raise pipe.error
            if pipe.eof:
                return None
            self._receiving = True
            try:
                await pipe.park()
            finally:
                self._receiving = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            if type(max_bytes) is not int:
                max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        pipe = await self._readable()
        if pipe is None:
            return b""
        chunk = pipe.chunks[0]
        start = pipe.offset
        end = len(chunk) if max_bytes is None else min(len(chunk), start + max_bytes)
        if end == len(chunk):
            pipe.chunks.popleft()
            pipe.offset = 0
        else:
            pipe.offset = end
        return chunk if start == 0 and end == len(chunk) else chunk[start:end]

    async def receive_into(self, buffer: memoryview) -> int:
        pipe = await self._readable()
        if pipe is None:
            return 0
        filled = 0
        while pipe.chunks and filled < len(buffer):
            chunk = pipe.chunks[0]
            take = min(len(chunk) - pipe.offset, len(buffer) - filled)
            buffer[filled : filled + take] = memoryview(chunk)[pipe.offset : pipe.offset + take]
            filled += take
            pipe.offset += take
            if pipe.offset == len(chunk):
                pipe.chunks.popleft()
                pipe.offset = 0
        return filled

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._host.streams.pop(self, None)
            if self._outbound is not None and self._host.up and self._inbound.error is None:
                self._host.network.schedule(
                    self._host.index,
                    self._remote.index,
                    0,
                    self._outbound.deliver_eof,
                    None,
                    KIND_STREAM,
                    self._outbound,
                )
            self._inbound.wake()
        await trio.lowlevel.checkpoint()

    def reset(self) -> None:
        """The host crashed: the peer's pipe breaks after one link latency."""
        self._closed = True
        if self._outbound is not None:
            network = self._host.network
            network.schedule(
                self._host.index,
                self._remote.index,
                0,
                self._outbound.deliver_reset,
                None,
                KIND_STREAM,
                self._outbound,
            )
        self._inbound.wake()


def connected_pair(
    client: StreamHost, client_pipe: Pipe, server: StreamHost, client_address: str, server_address: str
) -> tuple[SimStream, SimStream]:
    """Both ends of a new connection: (the client's, the server's). ``client_pipe`` is the client's
    inbound pipe, made when the connect began so that it belongs to the client's incarnation then."""
    server_pipe = Pipe(server)
    server_stream = SimStream(server, client, server_pipe, client_address)
    server_stream._outbound = client_pipe
    client_stream = SimStream(client, server, client_pipe, server_address)
    client_stream._outbound = server_pipe
    return client_stream, server_stream
