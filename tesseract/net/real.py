"""The real host: TCP streams, UDP datagrams, worker threads and the system clock.

This is the only module of ``tesseract/`` allowed to touch sockets, threads and the wall clock
directly (a test checks that). A node binds TCP and UDP on the same port, so one ``host:port``
reaches it for both.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import random
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Generic, TypeVar

import trio

from tesseract.concurrency import leave_signals_to_the_main_thread
from tesseract.net.address import format_address, parse_address
from tesseract.net.errors import FrameTooLarge, PeerUnavailable
from tesseract.net.framing import BufferCount
from tesseract.net.host import MAX_DATAGRAM_SIZE, Bridge, Host, Stream, StreamHandler, Transport

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: How much a single receive asks the kernel for; large enough to move big tensors in few calls.
RECEIVE_CHUNK = 1 << 20
#: Descriptors kept out of ``max_streams`` for everything else a node opens (files, checkpoints, the
#: UDP socket, its own outgoing connections, torch's libraries): at least this many...
DESCRIPTOR_RESERVE = 64
#: ...or this share of the limit, whichever is more.
DESCRIPTOR_RESERVE_SHARE = 1 / 8


class TCPStream(Stream):
    """A trio ``SocketStream`` plus ``receive_into`` straight from the socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._socket = stream.socket
        try:
            name = self._socket.getpeername()
            self._peer = format_address(name[0], name[1])
        except OSError:
            self._peer = "?"

    @property
    def peer(self) -> str:
        return self._peer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Write what the kernel takes at once ourselves: trio's send_all makes every send, even one
        # that completes at once, a pass of the scheduler, which is ~10% of a small RPC's round trip.
        # Callers hold the stream's send lock, so writes never interleave. Anything left waits in trio.
        view = memoryview(data).cast("B")
        fileno = self._socket.fileno()  # -1 once closed; never a cached number another socket reuses
        if fileno < 0:
            raise trio.ClosedResourceError("this stream is closed")
        try:
            sent = os.write(fileno, view) if view else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        if sent < len(view):
            await self._stream.send_all(view[sent:])

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._stream.receive_some(RECEIVE_CHUNK if max_bytes is None else max_bytes)

    async def receive_into(self, buffer: memoryview) -> int:
        if self._socket.fileno() < 0:
            raise trio.ClosedResourceError("this stream is closed")
        try:
            return await self._socket.recv_into(buffer, len(buffer))
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class RealTransport(Transport):
    def __init__(self, listeners: list[trio.SocketListener], udp: trio.socket.SocketType, address: str):
        self._listeners = listeners
        self._udp = udp
        self._udp_family = udp.family
        self.address = address
        self.max_datagram_size = MAX_DATAGRAM_SIZE
        limit = raise_open_file_limit()
        if limit is not None:
            self.max_streams = max(1, limit - max(DESCRIPTOR_RESERVE, int(limit * DESCRIPTOR_RESERVE_SHARE)))

    async def open_stream(self, address: str) -> Stream:
        host, port = parse_address(address)
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise PeerUnavailable(f"cannot connect to {address}: {exc}") from exc
        return TCPStream(stream)

    async def serve_streams(
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def serve_one(stream: trio.SocketStream) -> None:
            wrapped = TCPStream(stream)
            try:
                await handler(wrapped)
            except Exception:
                # One connection's failure must never take the listener (and every other peer) down.
                logger.exception("connection handler for %s failed", wrapped.peer)
            finally:
                await wrapped.aclose()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve_one, self._listeners)
            task_status.started()

    async def send_datagram(self, address: str, data: bytes | bytearray | memoryview) -> None:
        if len(data) > self.max_datagram_size:
            raise FrameTooLarge(f"datagram of {len(data)} bytes exceeds {self.max_datagram_size}")
        host, port = parse_address(address)
        try:
            await self._udp.sendto(data, (host, port))
        except OSError as exc:
            # UDP is best effort; an unreachable or refused peer looks like loss.
            if exc.errno not in (
                errno.ECONNREFUSED,
                errno.EHOSTUNREACH,
                errno.ENETUNREACH,
                errno.EAFNOSUPPORT,
            ):
                raise

    async def receive_datagram(self) -> tuple[bytes, str]:
        while True:
            try:
                data, sender = await self._udp.recvfrom(self.max_datagram_size + 1)
            except ConnectionRefusedError:
                continue  # an ICMP error from an earlier send; nothing to receive
            return data, format_address(sender[0], sender[1])

    def close(self) -> None:
        self._udp.close()


class ThreadBridge(Bridge):
    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token

    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(async_fn, *args, trio_token=self._token)


class RealHost(Host):
    """A node on real sockets. Open with ``async with RealHost.open("127.0.0.1:0") as host``."""

    #: Work announced as smaller than this (``flops``) runs on the event loop itself, when no worker
    #: is busy: the round trip to a worker thread cost ~0.26 ms here, more than a small expert's
    #: batch (8 rows of a 256-wide ffn: 0.23 ms forward). 3e7 flops is about a millisecond of CPU,
    #: short enough not to hold up the loop's other work.
    inline_flops: float = 3e7

    def __init__(self, transport: RealTransport, seed: int | None, compute_threads: int) -> None:
        self.transport = transport
        self.random = random.Random(seed)
        self.bridge = ThreadBridge(trio.lowlevel.current_trio_token())
        self._compute_limiter = trio.CapacityLimiter(compute_threads)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, listen: str = "127.0.0.1:0", *, seed: int | None = None, compute_threads: int = 1
    ) -> AsyncIterator[RealHost]:
        """Bind TCP and UDP on one port (port 0 picks a free one) and yield the host."""
        keep_freed_memory_for_reuse()
        host, port = parse_address(listen)
        listeners, udp = await _bind_tcp_and_udp(host, port)
        bound_port = listeners[0].socket.getsockname()[1]
        transport = RealTransport(listeners, udp, format_address(host, bound_port))
        if _allocator_tuned and not _releasing.get():
            # A system task: it lives as long as the run, whatever order hosts open and close in.
            _releasing.set(True)
            trio.lowlevel.spawn_system_task(_release_freed_memory_periodically)
        try:
            yield cls(transport, seed, compute_threads)
        finally:
            transport.close()
            for listener in listeners:
                await listener.aclose()

    async def compute(self, fn: Callable[..., T], *args: Any, flops: float = 0.0) -> T:
        if 0 < flops < self.inline_flops and not self._compute_limiter.borrowed_tokens:
            # Small: not worth a thread hop (and the device is idle, so order holds). No checkpoint
            # either: each one costs a pass of the scheduler, and the caller's next await yields.
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._compute_limiter)

    def wall_time(self) -> float:
        return time.time()


async def _bind_tcp_and_udp(host: str, port: int, attempts: int = 20) -> tuple[list, trio.socket.SocketType]:
    """Bind a TCP listener and a UDP socket on the same port; retry when port 0 lands on a UDP-taken port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error: OSError | None = None
    for _ in range(attempts if port == 0 else 1):
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        try:
            await udp.bind((host, bound))
        except OSError as exc:
            last_error = exc
            udp.close()
            for listener in listeners:
                await listener.aclose()
            continue
        return listeners, udp
    raise OSError(f"could not bind TCP and UDP on {format_address(host, port)}: {last_error}")


_allocator_checked = False
_allocator_tuned = False
_libc: Any = None
#: After a period (seconds) without a large frame buffer allocated...
RELEASE_PERIOD = 5.0
#: ...freed memory the allocator keeps beyond this goes back to the system.
RELEASE_FREED_OVER = 64 * 1024 * 1024


def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory for reuse (once per process).

    Every message carrying tensors needs a buffer of its size. By default glibc maps each block over
    32 MiB fresh from the kernel and unmaps it on free, so every large message pays a page fault per
    4 KiB on first touch. Measured on loopback: a 64 MiB tensor echo ran at 0.97 GB/s by default and
    3.0 GB/s with this. Freed memory at the top of the heap is kept up to 512 MiB, and all of it only
    while large messages keep coming: after a quiet period it goes back to the system
    (``QuietRelease``), so a peak (an attack, a burst) is not held for ever. Set
    ``TESSERACT_MALLOC_TUNING=0`` to opt out; a no-op off glibc.
    """
    global _allocator_checked, _allocator_tuned, _libc
    if _allocator_checked:
        return False
    _allocator_checked = True
    if os.environ.get("TESSERACT_MALLOC_TUNING", "1") == "0" or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, libc.mallinfo2.restype = libc.mallopt, _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 512 << 20)):
        return False
    _libc = libc
    _allocator_tuned = True
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def freed_memory_kept() -> int:
    """Bytes the allocator holds freed, for reuse (0 when the allocator is not tuned)."""
    return _libc.mallinfo2().fordblks if _libc is not None else 0


def release_freed_memory(over: int = RELEASE_FREED_OVER) -> bool:
    """Give freed memory back to the system if the allocator keeps more than ``over`` bytes of it.

    ``malloc_trim`` returns every free page, also between blocks in use (which a trim threshold never
    reaches): measured, 1.5 GiB freed among small live blocks stayed resident with any threshold and
    went back in 4.7 ms here. The next large messages then fault their pages in again, once.
    """
    if _libc is None or freed_memory_kept() <= over:
        return False
    _libc.malloc_trim(0)
    return True


class QuietRelease:
    """When to give freed memory back: after a period in which no large frame buffer was allocated (a
    quiet spell: steady large traffic keeps reusing what it freed, at full speed), and once per burst
    of large buffers (memory given back stays given back until large buffers are allocated again)."""

    def __init__(self, count: int = 0) -> None:
        self._seen = count  # the count of large buffers at the previous check
        self._released_at = count  # ... and when memory was last given back

    def due(self, count: int) -> bool:
        """Checked once a period with the count of large buffers allocated so far."""
        due = count == self._seen and count != self._released_at
        self._seen = count
        if due:
            self._released_at = count
        return due


_quiet_release = QuietRelease()
_last_check = -math.inf
_releasing: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("tesseract_releasing_memory", default=False)


async def _release_freed_memory_periodically() -> None:
    global _last_check
    while True:
        await trio.sleep(RELEASE_PERIOD)
        if time.monotonic() - _last_check < RELEASE_PERIOD / 2:
            continue  # another trio run in this process checked already
        _last_check = time.monotonic()
        try:
            if _quiet_release.due(BufferCount.value):
                release_freed_memory()
        except Exception:  # a system task must never raise
            logger.exception("releasing freed memory failed")


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (``tesseract ... | head -1``)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit on open descriptors to its hard limit; return the soft limit.

    A server's connections each take a descriptor; the soft limit is often 1,024 while the hard limit
    allows far more. None where the platform has no such limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class BackgroundLoop(Generic[T]):
    """A trio loop in a daemon thread holding an async context open for synchronous code.

    ``with BackgroundLoop(lambda: open_something()) as value:`` enters the async context manager on
    the loop's thread and returns what it yields; leaving closes it there and ends the loop. Plain
    torch code (a training script) then reaches the loop through a host's ``bridge``.
    """

    def __init__(
        self, open_context: Callable[[], AbstractAsyncContextManager[T]], *, name: str = "tesseract-loop"
    ) -> None:
        self._open_context = open_context
        self._name = name
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._value: T | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> T:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._value  # type: ignore[return-value]

    def __exit__(self, *exc_info: Any) -> None:
        assert self._thread is not None and self._token is not None and self._stop is not None
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def _run(self) -> None:
        leave_signals_to_the_main_thread()
        trio.run(self._serve)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with self._open_context() as value:
                self._value = value
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            if self._ready.is_set():
                logger.exception("the background loop %s failed while closing", self._name)
                return
            self._error = exc
            self._ready.set()
