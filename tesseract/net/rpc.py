"""Request/response RPC over streams: typed handlers, pooled multiplexed connections, deadlines.

- ``Router`` maps method names to handlers and turns one decoded request into one reply. It is shared
  by stream RPC (here) and datagram RPC (``tesseract.net.datagram``).
- ``RPCServer`` serves a router on the host's stream listener: many connections, many concurrent
  requests per connection, a typed error for anything malformed, and a bound on in-flight work.
- ``RPCClient`` keeps one connection per peer and multiplexes concurrent calls over it by request id.
  A connection that breaks fails its calls with ``PeerUnavailable`` and is replaced on the next call,
  so a peer that restarts is reachable again at once.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import msgspec
import trio

from tesseract.concurrency import background_nursery
from tesseract.net.errors import (
    CallTimeout,
    FrameTooLarge,
    PeerUnavailable,
    ProtocolError,
    RemoteError,
    TensorError,
)
from tesseract.net.framing import DEFAULT_MAX_FRAME_SIZE, Frame, FrameReader, acquire_lock, send_frame
from tesseract.net.host import Host, Stream
from tesseract.net.messages import (
    ErrorCode,
    ErrorReply,
    Request,
    Response,
    deadline_is_valid,
    decode_payload,
    encode_frame,
    error_reply,
    split_body,
)

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, str], Awaitable[Any]]

#: The longest any handler may run, whatever deadline its caller sent.
DEFAULT_MAX_HANDLER_TIME = 600.0
DEFAULT_MAX_INFLIGHT_PER_CONNECTION = 256

#: Exceptions that mean "the payload is wrong", answered with ErrorCode.BAD_REQUEST.
BAD_INPUT_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, TensorError)


class Method(NamedTuple):
    request_type: type
    handler: Handler


class Router:
    """Method name -> (request type, handler). Handlers get ``(request, peer_address)``.

    A handler returns the reply payload (a msgspec struct) or raises ``RemoteError`` to send a typed
    error; any other exception becomes ``ErrorCode.INTERNAL`` and is logged.
    """

    def __init__(self, *, max_handler_time: float = DEFAULT_MAX_HANDLER_TIME) -> None:
        self._methods: dict[str, Method] = {}
        self.max_handler_time = max_handler_time
        #: Counts of what went wrong, by ErrorCode value (plus transport-level events).
        self.stats: Counter[str] = Counter()

    def add(self, name: str, request_type: type[Req], handler: Callable[[Req, str], Awaitable[Any]]) -> None:
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = Method(request_type, handler)

    async def handle(self, request: Request, payload: memoryview, peer: str) -> tuple[Any, Any]:
        """Run one request; return ``(envelope, payload)`` for the reply. Never raises for bad input."""
        method = self._methods.get(request.method)
        if method is None:
            return self._error(request.id, ErrorCode.UNKNOWN_METHOD, f"no method {request.method!r}"), None
        if not deadline_is_valid(request.timeout):
            message = f"deadline already passed (timeout {request.timeout})"
            return self._error(request.id, ErrorCode.DEADLINE_EXCEEDED, message), None
        try:
            arguments = decode_payload(method.request_type, payload)
        except BAD_INPUT_ERRORS as exc:
            return self._error(request.id, ErrorCode.BAD_REQUEST, f"{request.method}: {exc}"), None
        with trio.move_on_after(min(request.timeout, self.max_handler_time)) as scope:
            try:
                result = await method.handler(arguments, peer)
            except RemoteError as exc:
                code = ErrorCode(exc.code) if exc.code in ErrorCode._value2member_map_ else ErrorCode.INTERNAL
                return self._error(request.id, code, exc.message), None
            except BAD_INPUT_ERRORS as exc:
                return self._error(request.id, ErrorCode.BAD_REQUEST, f"{request.method}: {exc}"), None
            except Exception as exc:
                logger.exception("handler %s failed for %s", request.method, peer)
                return self._error(request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"), None
        if scope.cancelled_caught:
            return self._error(
                request.id, ErrorCode.DEADLINE_EXCEEDED, f"{request.method} ran past its deadline"
            ), None
        return Response(request.id), result

    def _error(self, request_id: int, code: ErrorCode, message: str) -> ErrorReply:
        self.stats[code.value] += 1
        return error_reply(request_id, code, message)


class RPCServer:
    """Serves a ``Router`` over the host's streams."""

    def __init__(
        self,
        host: Host,
        router: Router,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_inflight_per_connection: int = DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
    ) -> None:
        self.host = host
        self.router = router
        self.max_frame_size = max_frame_size
        self.max_inflight = max_inflight_per_connection

    @property
    def stats(self) -> Counter[str]:
        return self.router.stats

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.host.transport.serve_streams(self._serve_connection, task_status=task_status)

    async def _serve_connection(self, stream: Stream) -> None:
        async with trio.open_nursery() as nursery:
            await self._serve_next_request(_ServedConnection(stream, self.max_frame_size, nursery))

    async def _serve_next_request(self, connection: _ServedConnection) -> None:
        """Read up to the next request, hand the reading on to a new task, then run it in this one.

        Leader and follower: the request starts at once instead of a scheduler pass later, in a
        task of its own, and the connection keeps reading while it runs (a handler may wait long,
        for a batch to fill). At the end of the stream, every unfinished request is cancelled: the
        client is gone, and nobody could receive their replies.
        """
        request = await self._next_request(connection)
        if request is None:
            connection.nursery.cancel_scope.cancel()
            return
        connection.inflight += 1
        connection.nursery.start_soon(self._serve_next_request, connection)
        try:
            envelope, result = await self.router.handle(*request, connection.stream.peer)
            await self._reply(connection.stream, connection.lock, envelope, result)
        finally:
            connection.inflight -= 1

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
                await self._reply(connection.stream, connection.lock, error_reply(0, code, str(exc)), None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["connection_reset"] += 1
        return None

    async def _admit(self, frame: Frame, connection: _ServedConnection) -> tuple[Request, memoryview] | None:
        """The frame's request and payload; or None, once a frame that is no request to run is answered."""
        stream, lock = connection.stream, connection.lock
        try:
            envelope, payload = split_body(memoryview(frame.body), frame.envelope_size)
        except ProtocolError as exc:
            self.stats[ErrorCode.PROTOCOL_ERROR.value] += 1
            await self._reply(stream, lock, error_reply(0, ErrorCode.PROTOCOL_ERROR, str(exc)), None)
            return None
        if not isinstance(envelope, Request):
            self.stats[ErrorCode.PROTOCOL_ERROR.value] += 1
            message = f"expected a request, got {type(envelope).__name__}"
            await self._reply(stream, lock, error_reply(envelope.id, ErrorCode.PROTOCOL_ERROR, message), None)
            return None
        if connection.inflight >= self.max_inflight:
            self.stats[ErrorCode.OVERLOADED.value] += 1
            message = f"more than {self.max_inflight} requests in flight on one connection"
            await self._reply(stream, lock, error_reply(envelope.id, ErrorCode.OVERLOADED, message), None)
            return None
        return envelope, payload

    async def _reply(self, stream: Stream, lock: trio.Lock, envelope: Any, payload: Any) -> None:
        frame = encode_reply(self.router, envelope, payload, encode_frame, max_frame_size=self.max_frame_size)
        try:
            await send_frame(stream, lock, frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["reply_undeliverable"] += 1


def encode_reply(router: Router, envelope: Any, payload: Any, encode: Callable[..., bytearray], **limit: int):
    """Encode a reply; a reply that cannot be sent becomes a typed error instead (never an exception)."""
    try:
        return encode(envelope, payload, **limit)
    except FrameTooLarge as exc:
        error = router._error(envelope.id, ErrorCode.FRAME_TOO_LARGE, f"reply too large: {exc}")
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        logger.error("cannot encode the reply to request %d: %s", envelope.id, exc)
        error = router._error(
            envelope.id, ErrorCode.INTERNAL, f"the handler's reply cannot be encoded: {exc}"
        )
    return encode(error, None, **limit)


class _ServedConnection:
    """What the tasks serving one client connection share."""

    __slots__ = ("inflight", "lock", "nursery", "reader", "stream")

    def __init__(self, stream: Stream, max_frame_size: int, nursery: trio.Nursery) -> None:
        self.stream = stream
        self.reader = FrameReader(stream, max_frame_size)
        self.lock = trio.Lock()  # replies from concurrent requests never interleave
        self.nursery = nursery
        self.inflight = 0


class _Pending:
    """One call waiting for its reply."""

    __slots__ = ("awaiting", "call_id", "connection", "envelope", "error", "finished", "payload", "wake")

    def __init__(self, call_id: int, connection: _Connection) -> None:
        self.call_id = call_id
        self.connection = connection
        self.finished = False  # its reply (or an error) is in
        self.awaiting = False  # sent, and its caller waits: it may be handed the reading
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


#: ``_Connection.reader`` when the connection's own background task reads.
_BACKGROUND = "background"


class _Connection:
    """One pooled stream. Exactly one task reads it at a time, and holds ``reader``: a call waiting for
    its reply reads itself if nobody else does (its reply then wakes no other task first: one
    scheduler pass less per call), and a background task reads whenever no call does, to notice a
    closed connection at once and route the replies of calls that wait while it reads."""

    def __init__(self, address: str, stream: Stream, max_frame_size: int) -> None:
        self.address = address
        self.stream = stream
        self.frames = FrameReader(stream, max_frame_size)
        self.lock = trio.Lock()
        self.pending: dict[int, _Pending] = {}
        self.closed = False
        self.writable = True  # False once retired: drains its replies, then closes
        self.reader: _Pending | str | None = None
        self.background_wake = trio.Event()  # the reading is back for the background task
        self.background_scope = trio.CancelScope()  # cancelled to stop the background task for good

    def fail_all(self, error: Exception) -> None:
        self.closed = True
        for pending in self.pending.values():
            pending.error = error
            pending.finish()
        self.pending.clear()

    def hand_over(self) -> None:
        """Give up the reading: to a call that waits for its reply, else to the background task."""
        for pending in self.pending.values():
            if pending.awaiting:
                self.reader = pending
                pending.wake.set()
                return
        self.reader = None
        self.background_wake.set()

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

    def __init__(self, host: Host, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.host = host
        self.max_frame_size = max_frame_size
        self._connections: dict[str, _Connection] = {}
        self._connecting: dict[str, trio.Event] = {}
        self._ids = itertools.count(host.random.getrandbits(32))
        self._nursery: trio.Nursery | None = None
        self.stats: Counter[str] = Counter()

    async def __aenter__(self) -> RPCClient:
        self._nursery_manager = background_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
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
            connection = _Connection(address, stream, self.max_frame_size)
            self._connections[address] = connection
            assert self._nursery is not None, "use RPCClient as an async context manager"
            self._nursery.start_soon(self._read_in_background, connection)
            return connection, False
        finally:
            del self._connecting[address]
            event.set()

    async def _await_reply(self, pending: _Pending) -> None:
        """Wait for the reply, reading the stream whenever nobody else does."""
        connection = pending.connection
        pending.awaiting = True
        try:
            while not pending.finished:
                if connection.reader is None:
                    connection.reader = pending
                if connection.reader is pending:
                    await self._read_frame(connection)
                else:
                    await pending.wait()  # the reader routes our reply to us, or hands us the reading
        finally:
            pending.awaiting = False
            if connection.reader is pending:
                connection.hand_over()

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
        try:
            with connection.background_scope:
                while connection.writable or connection.pending:
                    if connection.reader is None:
                        connection.reader = _BACKGROUND
                    if connection.reader is not _BACKGROUND:
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

    def _drop(self, connection: _Connection, error: Exception) -> None:
        connection.fail_all(error)
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]
