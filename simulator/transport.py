"""The simulated transport: connects, listeners and datagrams between hosts of one network.

A connect is a SYN that travels the link to the server and an answer that travels back, each one
message; a datagram is one message into the receiver's inbox. Whatever the network loses or a
partition holds, the transport sees as TCP and UDP would: a connect that never completes, a datagram
that never arrives.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Mapping
from typing import Protocol

import trio

from simulator.links import LinkProfile
from simulator.streams import Parking, Pipe, SimStream, StreamHost, Wire, connected_pair
from simulator.trace import KIND_CONNECT, KIND_DATAGRAM
from tesseract.net.errors import FrameTooLarge, PeerUnavailable
from tesseract.net.host import MAX_DATAGRAM_SIZE, Stream, StreamHandler, Transport

logger = logging.getLogger(__name__)


class TransportNetwork(Wire, Protocol):
    """What a transport needs of the network: sending, the hosts by address, the default link."""

    rng: random.Random

    @property
    def hosts(self) -> Mapping[str, TransportHost]: ...

    @property
    def default_link(self) -> LinkProfile: ...


class TransportHost(StreamHost, Protocol):
    """What a transport needs of its own host and of the hosts it reaches."""

    listener: tuple[StreamHandler, trio.Nursery] | None
    inbox: DatagramInbox

    @property
    def address(self) -> str: ...

    @property
    def network(self) -> TransportNetwork: ...

    async def checkpoint_up(self) -> None: ...


class DatagramInbox(Parking):
    """Datagrams waiting for a host's receiver."""

    __slots__ = ("host", "items", "limit")

    def __init__(self, host: StreamHost, limit: int = 4096) -> None:
        super().__init__()
        self.host = host
        self.items: deque[tuple[bytes, str]] = deque()
        self.limit = limit  # like a socket buffer: overflow is loss

    def deliver(self, item: tuple[bytes, str]) -> None:
        if self.host.up and len(self.items) < self.limit:
            self.items.append(item)
            self.wake()


class _Connect(Parking):
    """A pending ``open_stream``: the SYN's journey and its answer."""

    __slots__ = ("client", "client_pipe", "result", "server")

    def __init__(self, client: TransportHost, server: TransportHost) -> None:
        super().__init__()
        self.client = client
        self.server = server
        self.client_pipe = Pipe(client)
        self.result: SimStream | BaseException | None = None


class SimTransport(Transport):
    def __init__(self, host: TransportHost) -> None:
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
        client_stream, server_stream = connected_pair(
            client, attempt.client_pipe, server, peer, server.address
        )
        handler, nursery = listener
        nursery.start_soon(_run_handler, handler, server_stream)
        network.schedule(
            server.index, client.index, 64, self._on_answer, (attempt, client_stream), KIND_CONNECT
        )

    @staticmethod
    def _on_answer(item: tuple[_Connect, SimStream | BaseException]) -> None:
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


async def _run_handler(handler: StreamHandler, stream: SimStream) -> None:
    try:
        await handler(stream)
    except Exception:
        # As on a real host: one connection's failure never takes the listener down.
        logger.exception("connection handler for %s failed", stream.peer)
    finally:
        await stream.aclose()
