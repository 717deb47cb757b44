"""Simulated hosts: the ``tesseract.net.host.Host`` interface over a ``SimNetwork``.

Streams are pairs of pipes; each ``send_all`` is one message on the link, delivered by the network's
pump at its arrival tick straight into the peer pipe, which wakes a parked reader by rescheduling it
(no timer, no extra task). Datagrams go to a per-host inbox the same way.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

from simulator.network import KIND_CONNECT, KIND_DATAGRAM, KIND_STREAM
from tesseract.net.errors import FrameTooLarge, PeerUnavailable
from tesseract.net.host import MAX_DATAGRAM_SIZE, Bridge, Host, Stream, StreamHandler, Transport

if TYPE_CHECKING:
    from simulator.network import SimNetwork

T = TypeVar("T")
logger = logging.getLogger(__name__)


class HostCrashed(PeerUnavailable):
    """This host is crashed: it can neither send nor receive until it restarts."""


@dataclass(frozen=True)
class DeviceProfile:
    """The simulator's cost model for ``host.compute``: virtual seconds = overhead + flops / speed."""

    flops_per_s: float = 1e12
    overhead_s: float = 20e-6

    def cost(self, flops: float) -> float:
        return self.overhead_s + flops / self.flops_per_s


class _Parking:
    """At most one task parked on something; woken by rescheduling it directly."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: trio.lowlevel.Task | None = None

    async def park(self) -> Any:
        self.waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self, value: Any = None) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task, outcome.Value(value))


class _Pipe(_Parking):
    """One direction of a connection, as seen by its reader."""

    __slots__ = ("chunks", "eof", "error", "incarnation", "offset", "owner")

    def __init__(self, owner: SimHost) -> None:
        super().__init__()
        self.owner = owner
        self.incarnation = owner.incarnation
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # bytes of chunks[0] already read
        self.eof = False
        self.error: BaseException | None = None

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
    def __init__(self, host: SimHost, remote: SimHost, inbound: _Pipe, peer: str) -> None:
        self._host = host
        self._remote = remote
        self._inbound = inbound
        self._outbound: _Pipe | None = None  # set by whoever builds the pair
        self._peer = peer
        self._closed = False
        host.streams[self] = None

    @property
    def peer(self) -> str:
        return self._peer

    def _check_writable(self) -> _Pipe:
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
            self._host.index, self._remote.index, len(payload), outbound.deliver, payload, KIND_STREAM
        )

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _readable(self) -> _Pipe | None:
        """Wait until there is data (return the pipe), EOF (None), or an error (raise)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._inbound
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            if pipe.chunks:
                return pipe
            if pipe.error is not None:
                raise pipe.error
            if pipe.eof:
                return None
            await pipe.park()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
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
                    self._host.index, self._remote.index, 0, self._outbound.deliver_eof, None, KIND_STREAM
                )
            self._inbound.wake()
        await trio.lowlevel.checkpoint()

    def reset(self) -> None:
        """The host crashed: the peer's pipe breaks after one link latency."""
        self._closed = True
        if self._outbound is not None:
            network = self._host.network
            network.schedule(
                self._host.index, self._remote.index, 0, self._outbound.deliver_reset, None, KIND_STREAM
            )
        self._inbound.wake()


class _Connect(_Parking):
    """A pending ``open_stream``: the SYN's journey and its answer."""

    __slots__ = ("client", "client_pipe", "result", "server")

    def __init__(self, client: SimHost, server: SimHost) -> None:
        super().__init__()
        self.client = client
        self.server = server
        self.client_pipe = _Pipe(client)
        self.result: SimStream | BaseException | None = None


class SimTransport(Transport):
    def __init__(self, host: SimHost) -> None:
        self._host = host
        self.address = host.address
        self.max_datagram_size = MAX_DATAGRAM_SIZE
        self._ephemeral_ports = itertools.count(40000)

    # ----- streams -----------------------------------------------------------------------------

    async def open_stream(self, address: str) -> Stream:
        host = self._host
        await host.checkpoint_up()
        network = host.network
        server = network.hosts.get(address)
        if server is None:
            await trio.sleep(network.default_link.latency.sample(network.rng) * 2)
            raise PeerUnavailable(f"cannot connect to {address}: no such host")
        attempt = _Connect(host, server)
        network.schedule(host.index, server.index, 64, self._on_syn, attempt, KIND_CONNECT)
        try:
            result = await attempt.park()
        finally:
            attempt.waiter = None
        if isinstance(result, BaseException):
            raise result
        return result

    def _on_syn(self, attempt: _Connect) -> None:
        """At the server, when the SYN arrives: accept (start the handler) or refuse."""
        server, client = attempt.server, attempt.client
        network = server.network
        listener = server.listener if server.up else None
        if listener is None:
            error = PeerUnavailable(f"connection to {server.address} refused")
            network.schedule(server.index, client.index, 64, self._on_answer, (attempt, error), KIND_CONNECT)
            return
        peer = f"{client.address.rsplit(':', 1)[0]}:{next(self._ephemeral_ports)}"
        server_pipe = _Pipe(server)
        server_stream = SimStream(server, client, server_pipe, peer)
        server_stream._outbound = attempt.client_pipe
        client_stream = SimStream(client, server, attempt.client_pipe, server.address)
        client_stream._outbound = server_pipe
        handler, nursery = listener
        nursery.start_soon(_run_handler, handler, server_stream)
        network.schedule(
            server.index, client.index, 64, self._on_answer, (attempt, client_stream), KIND_CONNECT
        )

    @staticmethod
    def _on_answer(item: tuple[_Connect, Any]) -> None:
        attempt, result = item
        if attempt.waiter is None:  # the caller gave up (cancelled) meanwhile
            if isinstance(result, SimStream):
                result.reset()
            return
        if isinstance(result, SimStream) and not attempt.client.up:
            return
        attempt.wake(result)

    async def serve_streams(
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host = self._host
        await host.checkpoint_up()
        if host.listener is not None:
            raise RuntimeError(f"{host.address} is already serving streams")
        async with trio.open_nursery() as nursery:
            host.listener = (handler, nursery)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                if host.listener is not None and host.listener[1] is nursery:
                    host.listener = None

    # ----- datagrams ---------------------------------------------------------------------------

    async def send_datagram(self, address: str, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        host = self._host
        await host.checkpoint_up()
        if len(data) > self.max_datagram_size:
            raise FrameTooLarge(f"datagram of {len(data)} bytes exceeds {self.max_datagram_size}")
        target = host.network.hosts.get(address)
        if target is None:
            return  # nobody there: lost, as UDP would be
        inbox = target.inbox
        host.network.schedule(
            host.index, target.index, len(data), inbox.deliver, (bytes(data), host.address), KIND_DATAGRAM
        )

    async def receive_datagram(self) -> tuple[bytes, str]:
        await self._host.checkpoint_up()
        inbox = self._host.inbox
        await trio.lowlevel.checkpoint_if_cancelled()
        while not inbox.items:
            await inbox.park()
            await self._host.checkpoint_up()
        return inbox.items.popleft()


class _Inbox(_Parking):
    """Datagrams waiting for a host's receiver."""

    __slots__ = ("host", "items", "limit")

    def __init__(self, host: SimHost, limit: int = 4096) -> None:
        super().__init__()
        self.host = host
        self.items: deque[tuple[bytes, str]] = deque()
        self.limit = limit  # like a socket buffer: overflow is loss

    def deliver(self, item: tuple[bytes, str]) -> None:
        if self.host.up and len(self.items) < self.limit:
            self.items.append(item)
            self.wake()


async def _run_handler(handler: StreamHandler, stream: SimStream) -> None:
    try:
        await handler(stream)
    except Exception:
        # As on a real host: one connection's failure never takes the listener down.
        logger.exception("connection handler for %s failed", stream.peer)
    finally:
        await stream.aclose()


class SimBridge(Bridge):
    """Lets code inside ``SimHost.compute`` call async code, in turn with the trio loop (see compute)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            raise RuntimeError("bridge.run is only available inside host.compute in the simulator")
        requests, replies = channel
        requests.put(("call", (async_fn, args)))
        return replies.get().unwrap()


class SimHost(Host):
    """A node of the virtual network. Start its code with ``host.start(fn, *args)``."""

    def __init__(
        self,
        network: SimNetwork,
        index: int,
        address: str,
        *,
        profile: DeviceProfile | None = None,
        clock_skew: float = 0.0,
    ) -> None:
        self.network = network
        self.index = index
        self._address = address
        self.profile = profile or DeviceProfile()
        self.clock_skew = clock_skew
        self.random = random.Random(f"host:{network.seed}:{index}")
        self.bridge = SimBridge()
        self.up = True
        self.incarnation = 0
        self.listener: tuple[StreamHandler, trio.Nursery] | None = None
        self.streams: dict[SimStream, None] = {}  # insertion-ordered: crash order is deterministic
        self.inbox = _Inbox(self)
        self._scopes: dict[trio.CancelScope, None] = {}
        self._device = trio.Lock()
        self.transport = SimTransport(self)

    @property
    def address(self) -> str:
        return self._address

    def require_up(self) -> None:
        if not self.up:
            raise HostCrashed(f"{self.address} is crashed")

    async def checkpoint_up(self) -> None:
        """For transport calls: a crashed host's own tasks are cancelled here (as the process would
        simply be gone); anyone else using a crashed host's transport gets ``HostCrashed``."""
        if not self.up:
            await trio.lowlevel.checkpoint()
            raise HostCrashed(f"{self.address} is crashed")

    def start(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Run ``async_fn(*args)`` as part of this host: a crash cancels it."""
        self.require_up()
        scope = trio.CancelScope()
        self._scopes[scope] = None
        incarnation = self.incarnation

        async def run() -> None:
            try:
                if self.up and self.incarnation == incarnation:  # it may have died before we ran
                    with scope:
                        await async_fn(*args)
            finally:
                self._scopes.pop(scope, None)

        self.network.start_soon(run, name=name or f"{self.address}:{getattr(async_fn, '__name__', 'task')}")

    def crash(self) -> None:
        """Die now: tasks cancelled, connections reset, listener and queued datagrams gone."""
        if not self.up:
            return
        self.up = False
        self.network.trace_fault("crash", self.index, self.incarnation)
        for scope in list(self._scopes):
            scope.cancel()
        self._scopes.clear()
        for stream in list(self.streams):
            stream.reset()
        self.streams.clear()
        self.listener = None
        self.inbox.items.clear()
        self.inbox.wake()

    def restart(self) -> None:
        """Come back with a fresh process: same address, no state; start its code again."""
        if self.up:
            return
        self.incarnation += 1
        self.up = True
        self.inbox = _Inbox(self)
        self.network.trace_fault("restart", self.index, self.incarnation)

    def wall_time(self) -> float:
        return self.network.epoch + trio.current_time() + self.clock_skew

    async def compute(self, fn: Callable[..., T], *args: Any, flops: float = 0.0) -> T:
        """Run ``fn`` while virtual time stands still, then charge its cost from the device profile.

        ``fn`` runs in a worker thread while this task blocks the trio loop synchronously, so exactly
        one of them runs at any moment. If ``fn`` calls ``host.bridge.run``, the task awaits that
        coroutine in virtual time (other tasks run meanwhile) and hands the result back.
        """
        await self.checkpoint_up()
        async with self._device:
            result = await self._run_with_handoff(fn, args)
            await trio.sleep(self.profile.cost(flops))
        return result

    async def _run_with_handoff(self, fn: Callable[..., T], args: tuple) -> T:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        replies: queue.SimpleQueue = queue.SimpleQueue()
        local = self.bridge._local

        def work() -> None:
            local.channel = (requests, replies)
            requests.put(("done", outcome.capture(fn, *args)))

        worker = threading.Thread(target=work, name=f"sim-compute-{self.address}", daemon=True)
        worker.start()
        while True:
            kind, item = requests.get()  # blocks the loop on purpose: virtual time must not move
            if kind == "done":
                worker.join()
                return item.unwrap()
            async_fn, call_args = item
            replies.put(await outcome.acapture(async_fn, *call_args))
