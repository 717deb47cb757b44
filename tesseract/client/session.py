"""``Client``: a trainer's session with the swarm — a host, a DHT node, pooled expert connections.

Two ways in, one object:

- Plain synchronous torch code: ``with tesseract.Client(initial_peers=[...]) as client:``. The client
  runs its own trio loop in a background thread; ``RemoteExpert`` and the mixture layers reach it
  through ``client.run`` (the host's ``bridge``).
- trio code, and the simulator: ``async with Client.attach(host, initial_peers) as client:``. Torch
  code then runs inside ``await client.host.compute(step)``, where the same ``bridge`` hands the
  network calls back to the loop (in the simulator, in turn with it, so runs stay deterministic).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import trio

from tesseract.concurrency import background_nursery
from tesseract.dht.node import DHTConfig, DHTNode
from tesseract.net import RPCClient
from tesseract.net.host import Host
from tesseract.server import protocol as wire

T = TypeVar("T")


class Client:
    """Use as ``with Client(initial_peers=[...]) as client`` or ``async with Client.attach(host, ...)``."""

    host: Host
    rpc: RPCClient
    dht: DHTNode | None

    def __init__(
        self,
        initial_peers: Sequence[str] = (),
        *,
        listen: str = "127.0.0.1:0",
        dht_config: DHTConfig | None = None,
        seed: int | None = None,
    ) -> None:
        """Configure a client to open with ``with``; it joins the DHT through ``initial_peers``."""
        self.initial_peers = list(initial_peers)
        self.listen = listen
        #: A trainer's DHT node is a client by default: it asks, holds nothing, and nobody routes to
        #: it, so trainers that come and go (or sit behind NAT) leave no holes in routing tables.
        self.dht_config = dht_config if dht_config is not None else DHTConfig(client_mode=True)
        self.seed = seed
        #: Expert schemas by (uid, endpoint); ``calls`` drops an entry when a call casts doubt on it.
        self.expert_infos: dict[tuple[str, str], wire.InfoResponse] = {}
        #: Expert calls that failed on the network, by kind: timeouts, refused (a typed error), unreachable.
        self.stats: Counter[str] = Counter()
        self._loop: Any = None
        self._nursery: Any = None

    # ----- synchronous use: a loop of our own in a background thread --------------------------

    def __enter__(self) -> Client:
        from tesseract.net.real import BackgroundLoop, RealHost  # the one real-world dependency

        async_client = self

        @asynccontextmanager
        async def open_on_loop() -> AsyncIterator[Client]:
            async with AsyncExitStack() as stack:
                host = await stack.enter_async_context(RealHost.open(self.listen, seed=self.seed))
                await stack.enter_async_context(async_client._services(host, self.initial_peers))
                yield async_client

        self._loop = BackgroundLoop(open_on_loop, name="tesseract-client")
        return self._loop.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.__exit__(*exc_info)

    # ----- trio use: on a host someone else owns -----------------------------------------------

    @classmethod
    @asynccontextmanager
    async def attach(
        cls,
        host: Host,
        initial_peers: Sequence[str] = (),
        *,
        dht: DHTNode | None = None,
        dht_config: DHTConfig | None = None,
    ) -> AsyncIterator[Client]:
        """A client on ``host``: joins the DHT through ``initial_peers`` unless given a ``dht`` node."""
        client = cls(initial_peers, dht_config=dht_config)
        async with client._services(host, initial_peers, dht=dht):
            yield client

    @asynccontextmanager
    async def _services(
        self, host: Host, initial_peers: Sequence[str], *, dht: DHTNode | None = None
    ) -> AsyncIterator[None]:
        self.host = host
        async with AsyncExitStack() as stack:
            if dht is None and initial_peers:
                dht = await stack.enter_async_context(
                    DHTNode.start(host, initial_peers, config=self.dht_config)
                )
            self.dht = dht
            self.rpc = await stack.enter_async_context(RPCClient(host))
            self._nursery = await stack.enter_async_context(background_nursery())
            yield

    # ----- from synchronous code ---------------------------------------------------------------

    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``async_fn(*args)`` on the client's loop from synchronous code; return its result."""
        return self.host.bridge.run(async_fn, *args)

    async def start_service(self, serve: Callable[..., Awaitable[Any]]) -> None:
        """Start ``serve(task_status=...)`` (trio's ``nursery.start`` protocol) beside the client's
        own services; it runs until the client closes. From synchronous code: ``client.run(
        client.start_service, serve)``."""
        await self._nursery.start(serve)

    def now(self) -> float:
        """The loop's clock (virtual in the simulator), for rates and timeouts in synchronous code."""
        return self.run(_current_time)

    def require_dht(self) -> DHTNode:
        if self.dht is None:
            raise RuntimeError("this client has no DHT node: give it initial_peers to find experts")
        return self.dht


async def _current_time() -> float:
    return trio.current_time()
