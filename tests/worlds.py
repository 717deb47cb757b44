"""Two worlds, one test: real loopback sockets and the simulated network behind the same API.

A test gets a ``World`` and calls ``world.run(main)``; ``main(world)`` creates hosts with
``await world.new_host()``, runs node code with ``world.start(host, fn)``, and injects faults with
``await world.crash(host)`` / ``await world.restart(host)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import trio

from simulator import SimHost, SimNetwork, run_simulation
from tesseract.net.host import Host
from tesseract.net.real import RealHost

T = TypeVar("T")


class World:
    name: str

    def run(self, main: Callable[[World], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def new_host(self) -> Host:
        raise NotImplementedError

    def start(self, host: Host, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        raise NotImplementedError

    async def crash(self, host: Host) -> None:
        raise NotImplementedError

    async def restart(self, host: Host) -> Host:
        raise NotImplementedError


class RealWorld(World):
    """Hosts on 127.0.0.1 (or ::1), real TCP and UDP, real time."""

    name = "real"

    def __init__(self, bind: str = "127.0.0.1:0") -> None:
        self.bind = bind
        self._nursery: trio.Nursery | None = None
        self._stacks: dict[int, AsyncExitStack] = {}
        self._scopes: dict[int, list[trio.CancelScope]] = {}

    def run(self, main: Callable[[World], Awaitable[T]]) -> T:
        async def root() -> T:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    return await main(self)
                finally:
                    nursery.cancel_scope.cancel()
                    for stack in self._stacks.values():
                        with trio.CancelScope(shield=True):
                            await stack.aclose()

        return trio.run(root)

    async def new_host(self, bind: str | None = None) -> Host:
        stack = AsyncExitStack()
        host = await stack.enter_async_context(RealHost.open(bind or self.bind))
        self._stacks[id(host)] = stack
        self._scopes[id(host)] = []
        return host

    def start(self, host: Host, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        scope = trio.CancelScope()
        self._scopes[id(host)].append(scope)

        async def run() -> None:
            with scope:
                await async_fn(*args)

        assert self._nursery is not None
        self._nursery.start_soon(run)

    async def crash(self, host: Host) -> None:
        for scope in self._scopes.pop(id(host), []):
            scope.cancel()
        await self._stacks.pop(id(host)).aclose()
        await trio.sleep(0.01)

    async def restart(self, host: Host) -> Host:
        return await self.new_host(host.address)


class SimWorld(World):
    """Hosts in a ``SimNetwork``: virtual time, configurable links and faults."""

    name = "sim"

    def __init__(self, **network_options: Any) -> None:
        network_options.setdefault("latency", 0.005)
        self.network = SimNetwork(**network_options)

    def run(self, main: Callable[[World], Awaitable[T]]) -> T:
        return run_simulation(lambda network: main(self), self.network)

    async def new_host(self) -> Host:
        return self.network.add_host()

    def start(self, host: Host, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert isinstance(host, SimHost)
        host.start(async_fn, *args)

    async def crash(self, host: Host) -> None:
        assert isinstance(host, SimHost)
        host.crash()

    async def restart(self, host: Host) -> Host:
        assert isinstance(host, SimHost)
        host.restart()
        return host
