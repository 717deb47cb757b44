"""The host seam: everything a node needs from the outside world, in one object.

Every part of Tesseract (DHT, runtime, server, client) talks to the world only through a ``Host``:
streams and datagrams through ``host.transport``, heavy torch work through ``host.compute``, randomness
through ``host.random``, sync-to-async calls through ``host.bridge``, and time through trio's clock
(``trio.current_time``, ``trio.sleep``) plus ``host.wall_time()`` for timestamps that cross nodes.

Two implementations exist: ``tesseract.net.real.RealHost`` (TCP, UDP, worker threads, the system clock)
and ``simulator.SimHost`` (a virtual network in virtual time). Code written against this module runs
unchanged in both.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

#: Largest datagram either transport accepts; fits one UDP packet over IPv4 and IPv6.
MAX_DATAGRAM_SIZE = 65_000


class Stream(trio.abc.Stream):
    """A trio byte stream that can also receive straight into a caller's buffer.

    ``receive_into`` lets a large frame land in its final buffer with no intermediate copy.
    """

    @abc.abstractmethod
    async def receive_into(self, buffer: memoryview) -> int:
        """Receive up to ``len(buffer)`` bytes into ``buffer``; return the count, 0 at end of stream."""

    @property
    @abc.abstractmethod
    def peer(self) -> str:
        """The remote end's ``host:port`` (for a served stream: the caller's, not a listening address)."""


StreamHandler = Callable[[Stream], Awaitable[None]]


class Transport(abc.ABC):
    """Streams and datagrams, addressed by ``host:port`` strings."""

    #: The address other peers reach this node at, for streams and datagrams alike.
    address: str
    max_datagram_size: int = MAX_DATAGRAM_SIZE
    #: How many streams this node can hold open at once (its descriptors, less a reserve); None: no
    #: limit worth knowing. A server caps its connections below it, so accepting never fails for lack
    #: of descriptors.
    max_streams: int | None = None

    @abc.abstractmethod
    async def open_stream(self, address: str) -> Stream:
        """Connect to a peer; raise ``PeerUnavailable`` if it cannot be reached."""

    @abc.abstractmethod
    async def serve_streams(
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept connections forever, running ``handler(stream)`` in a task for each one.

        The handler owns the stream; it is closed when the handler returns.
        """

    @abc.abstractmethod
    async def send_datagram(self, address: str, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram. Best effort: it may be lost, and nothing reports that."""

    @abc.abstractmethod
    async def receive_datagram(self) -> tuple[bytes, str]:
        """Wait for the next datagram; return its bytes and the sender's address."""


class Bridge(abc.ABC):
    """Runs async code on the node's trio loop from synchronous code (a ``compute`` function, autograd)."""

    @abc.abstractmethod
    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``async_fn(*args)`` on the host's loop, block until it finishes, return its result."""


class Host(abc.ABC):
    """One node's view of the world. See the module docstring."""

    transport: Transport
    random: random.Random
    bridge: Bridge

    @property
    def address(self) -> str:
        return self.transport.address

    @abc.abstractmethod
    async def compute(self, fn: Callable[..., T], *args: Any, flops: float = 0.0) -> T:
        """Run heavy synchronous work (torch) without blocking the event loop; return its result.

        ``flops`` is the work's size: the simulator charges virtual time from it, and the real host
        runs work announced as tiny (0 < flops < ``inline_flops``) on the loop, skipping a thread
        hop. Work that calls ``host.bridge`` must leave ``flops`` at 0: it needs its own thread.
        """

    @abc.abstractmethod
    def wall_time(self) -> float:
        """Seconds since the Unix epoch, for timestamps that other nodes read (record expirations).

        Deadlines and timeouts use trio's clock instead.
        """
