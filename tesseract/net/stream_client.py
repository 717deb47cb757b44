"""Calling peers over pooled, multiplexed stream connections.

``RPCClient`` keeps one connection per peer and multiplexes concurrent calls over it by request id.
A connection that breaks fails its calls with ``PeerUnavailable`` and is replaced on the next call,
so a peer that restarts is reachable again at once. Replies are read under the same limits a server
applies (a shared ``BufferBudget`` for unfinished frames, a deadline for a frame that has begun), so a
peer that claims a huge reply and then stalls costs the bytes it sent, and its calls end at their
deadlines.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any, TypeVar

import msgspec
import trio

from tesseract.concurrency import background_nursery
from tesseract.net.budget import BufferBudget
from tesseract.net.errors import CallTimeout, PeerUnavailable, ProtocolError, RemoteError
from tesseract.net.framing import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MIN_FRAME_RATE,
    Frame,
    FrameReader,
    acquire_lock,
)
from tesseract.net.host import Host, Stream
from tesseract.net.messages import ErrorReply, Request, Response, decode_payload, encode_frame, split_body
from tesseract.net.observe import CallObserver, observed_call
from tesseract.net.read_turn import NOBODY, ReadTurn
from tesseract.net.watchdog import Watchdog, shared_watchdog, tick_for

logger = logging.getLogger(__name__)

Resp = TypeVar("Resp")

#: Bytes all of a client's connections together may hold for replies not complete yet.
DEFAULT_CLIENT_BUFFER_BUDGET = 256 * 1024 * 1024


class _Pending:
    """One call waiting for its reply."""

    __slots__ = ("call_id", "connection", "envelope", "error", "finished", "payload", "wake")

    def __init__(self, call_id: int, connection: _Connection) -> None:
        self.call_id = call_id
        self.connection = connection
        self.finished = False  # its reply (or an error) is in
        self.wake = trio.Event()  # set when it finishes, or when it is handed the reading
        self.envelope: Response | ErrorReply | None = None
        self.payload: memoryview | None = None  # the reply's payload bytes, still encoded
        self.error: Exception | None = None

    def finish(self) -> None:
        self.finished = True
        self.wake.set()

    async def wait(self) -> None:
        await self.wake.wait()
        self.wake = trio.Event()


class _Connection:
    """One pooled stream. Exactly one task reads it at a time (``turn``): a call waiting for its reply
    reads itself if nobody else does (its reply then wakes no other task first: one scheduler pass
    less per call), and a background task reads whenever no call does, to notice a closed connection
    at once and route the replies of calls that wait while it reads."""

    def __init__(self, address: str, stream: Stream, client: RPCClient) -> None:
        self.client = client
        self.address = address
        self.stream = stream
        self.frames = FrameReader(
            stream,
            client.max_frame_size,
            budget=client.budget,
            frame_timeout=client.frame_timeout,
            min_frame_rate=client.min_frame_rate,
        )
        self.lock = trio.Lock()
        self.pending: dict[int, _Pending] = {}
        self.turn: ReadTurn[_Pending] = ReadTurn()
        self.closed = False
        self.writable = True  # False once retired: drains its replies, then closes
        self.background_wake = trio.Event()  # the reading is back for the background task
        self.background_scope = trio.CancelScope()  # cancelled to stop the background task for good

    def deadline(self) -> float:
        return self.frames.frame_deadline

    def expire(self) -> None:
        self.client._expire(self)

    def fail_all(self, error: Exception) -> None:
        self.closed = True
        self.frames.close()
        for pending in self.pending.values():
            pending.error = error
            pending.finish()
        self.pending.clear()

    def pass_turn(self, successor: _Pending | object | None) -> None:
        """Wake whoever ``ReadTurn`` handed the reading to."""
        if successor is NOBODY:
            self.background_wake.set()
        elif isinstance(successor, _Pending):
            successor.wake.set()

    def deliver(self, frame: Frame, stats: Counter[str]) -> None:
        """Route one reply frame to its call (``ProtocolError`` if its envelope is undecodable)."""
        envelope, payload = split_body(memoryview(frame.body), frame.envelope_size)
        pending = self.pending.pop(envelope.id, None)
        if pending is None:
            if isinstance(envelope, ErrorReply) and envelope.id == 0:
                # The peer could not parse something we sent: worth a line in the log.
                logger.warning("%s reported %s: %s", self.address, envelope.code, envelope.message)
            else:
                stats["late_replies"] += 1  # the caller gave up (deadline, cancelled) before it came
            return
        pending.envelope = envelope
        pending.payload = payload
        pending.finish()


class RPCClient:
    """Calls methods on peers over pooled, multiplexed stream connections.

    Use as ``async with RPCClient(host) as client: reply = await client.call(...)``.
    """

    def __init__(
        self,
        host: Host,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        buffer_budget: int = DEFAULT_CLIENT_BUFFER_BUDGET,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        min_frame_rate: float = DEFAULT_MIN_FRAME_RATE,
    ) -> None:
        self.host = host
        self.max_frame_size = max_frame_size
        self.budget = BufferBudget(buffer_budget)
        self.frame_timeout = frame_timeout
        self.min_frame_rate = min_frame_rate
        self._connections: dict[str, _Connection] = {}
        self._connecting: dict[str, trio.Event] = {}
        self._ids = itertools.count(host.random.getrandbits(32))
        self._nursery: trio.Nursery | None = None
        self._watchdog: Watchdog | None = None  # this run's, once entered
        self.stats: Counter[str] = Counter()
        #: Told of every finished call (metrics); see ``tesseract.net.observe``.
        self.on_call: CallObserver | None = None

    async def __aenter__(self) -> RPCClient:
        self._nursery_manager = background_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._watchdog = shared_watchdog(tick_for(self.frame_timeout))
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> bool | None:
        try:
            return await self._nursery_manager.__aexit__(exc_type, exc, traceback)
        finally:
            for connection in list(self._connections.values()):
                connection.fail_all(PeerUnavailable("client closed"))
                with trio.CancelScope(shield=True):
                    await connection.stream.aclose()
            self._connections.clear()

    async def call(
        self, address: str, method: str, request: Any, response_type: type[Resp], *, timeout: float
    ) -> Resp:
        """Call ``method`` on the peer at ``address``; return its reply decoded as ``response_type``.

        Raises ``CallTimeout`` past ``timeout`` seconds, ``PeerUnavailable`` if the peer cannot be
        reached or drops the connection, ``RemoteError`` for the peer's typed error replies.
        """
        if self.on_call is not None:
            return await observed_call(
                self.on_call, method, self._call, address, method, request, response_type, timeout=timeout
            )
        return await self._call(address, method, request, response_type, timeout=timeout)

    async def _call(
        self, address: str, method: str, request: Any, response_type: type[Resp], *, timeout: float
    ) -> Resp:
        deadline = trio.current_time() + timeout
        pending: _Pending | None = None
        try:
            with trio.move_on_at(deadline) as scope:
                pending = await self._send_request(address, method, request, deadline)
                await self._await_reply(pending)
        finally:
            if pending is not None and not pending.finished:
                self._abandon(pending)  # timed out or cancelled: a late reply will find nobody
        if scope.cancelled_caught:
            self.stats["timeouts"] += 1
            raise CallTimeout(f"{method} on {address} did not answer within {timeout:.3g}s")
        if pending.error is not None:
            raise pending.error
        envelope, payload = pending.envelope, pending.payload
        assert payload is not None
        if isinstance(envelope, ErrorReply):
            raise RemoteError(envelope.code, envelope.message, peer=address)
        try:
            return decode_payload(response_type, payload)
        except msgspec.MsgspecError as exc:
            raise ProtocolError(f"{method} on {address} sent a malformed reply: {exc}") from None

    async def _send_request(self, address: str, method: str, request: Any, deadline: float) -> _Pending:
        call_id = next(self._ids) & (2**63 - 1)
        frame = encode_frame(
            Request(call_id, method, deadline - trio.current_time()),
            request,
            max_frame_size=self.max_frame_size,
        )
        for attempt in (1, 2):
            connection, reused = await self._connection(address)
            pending = connection.pending[call_id] = _Pending(call_id, connection)
            try:
                await acquire_lock(connection.lock)
            except BaseException:
                connection.pending.pop(call_id, None)
                raise
            try:
                await connection.stream.send_all(frame)
                return pending
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                error = PeerUnavailable(f"connection to {address} broke: {exc}")
                self._drop(connection, error)
                # A frame that was not sent whole is never processed: one retry on a fresh connection.
                if attempt == 2 or not reused:
                    raise error from None
            except BaseException:
                # Cancelled mid-frame: the stream may now end in a partial frame, so it takes no more
                # writes. Calls already sent on it still receive their replies.
                connection.pending.pop(call_id, None)
                self._retire(connection)
                raise
            finally:
                connection.lock.release()
        raise AssertionError("unreachable")

    async def _connection(self, address: str) -> tuple[_Connection, bool]:
        while True:
            connection = self._connections.get(address)
            if connection is not None and not connection.closed:
                return connection, True
            waiting = self._connecting.get(address)
            if waiting is None:
                break
            await waiting.wait()
        event = self._connecting[address] = trio.Event()
        try:
            stream = await self.host.transport.open_stream(address)
            connection = _Connection(address, stream, self)
            self._connections[address] = connection
            assert self._watchdog is not None
            self._watchdog.watch(connection)
            assert self._nursery is not None, "use RPCClient as an async context manager"
            self._nursery.start_soon(self._read_in_background, connection)
            return connection, False
        finally:
            del self._connecting[address]
            event.set()

    async def _await_reply(self, pending: _Pending) -> None:
        """Wait for the reply, reading the stream whenever it is this call's turn."""
        connection = pending.connection
        turn = connection.turn
        turn.start_waiting(pending)
        try:
            while not pending.finished:
                if turn.reader is pending:
                    await self._read_frame(connection)
                else:
                    await pending.wait()  # the reader routes our reply to us, or hands us the reading
        finally:
            connection.pass_turn(turn.stop_waiting(pending))

    async def _read_frame(self, connection: _Connection) -> None:
        """Read one frame and route it; a broken or closed stream fails every call on it."""
        try:
            frame = await connection.frames.receive_frame()
            if frame is not None:
                connection.deliver(frame, self.stats)
                return
            error = PeerUnavailable(f"{connection.address} closed the connection")
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = PeerUnavailable(f"connection to {connection.address} failed: {exc}")
        self._drop(connection, error)
        connection.background_scope.cancel()  # it closes the stream

    async def _read_in_background(self, connection: _Connection) -> None:
        """Read whenever no call does: notices a closed connection at once, drains late replies."""
        error: Exception = PeerUnavailable(f"{connection.address} closed the connection")
        turn = connection.turn
        try:
            with connection.background_scope:
                while connection.writable or connection.pending:
                    if not turn.take_background():
                        connection.background_wake = trio.Event()
                        await connection.background_wake.wait()
                        continue
                    frame = await connection.frames.receive_frame()
                    if frame is None:
                        return
                    connection.deliver(frame, self.stats)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = PeerUnavailable(f"connection to {connection.address} failed: {exc}")
        finally:
            connection.pass_turn(turn.background_stopped())
            self._drop(connection, error)
            with trio.CancelScope(shield=True):
                await connection.stream.aclose()

    def _abandon(self, pending: _Pending) -> None:
        connection = pending.connection
        connection.pending.pop(pending.call_id, None)
        if not connection.writable and not connection.pending:
            connection.background_scope.cancel()

    def _retire(self, connection: _Connection) -> None:
        connection.writable = False
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]
        if not connection.pending:
            connection.background_scope.cancel()

    def _expire(self, connection: _Connection) -> None:
        """A reply that trickles: its calls fail, and the background task closes the stream."""
        self.stats["frame_timeouts"] += 1
        error = connection.frames.frame_timeout_error()
        self._drop(connection, PeerUnavailable(f"connection to {connection.address} failed: {error}"))
        connection.background_scope.cancel()

    def _drop(self, connection: _Connection, error: Exception) -> None:
        if self._watchdog is not None:
            self._watchdog.forget(connection)
        connection.fail_all(error)
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]
