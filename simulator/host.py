"""Simulated hosts: the ``tesseract.net.host.Host`` interface over a ``SimNetwork``.

A host is an address on the network, its tasks (cancelled together when it crashes), its transport,
its device (``compute`` in virtual time) and its own seeded random generator.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import trio

from simulator.compute import DeviceProfile, SimBridge
from simulator.streams import SimStream
from simulator.transport import DatagramInbox, SimTransport, TransportNetwork
from tesseract.net.errors import PeerUnavailable
from tesseract.net.host import Host, StreamHandler

__all__ = ["DeviceProfile", "HostCrashed", "HostNetwork", "SimHost"]

T = TypeVar("T")


class HostNetwork(TransportNetwork, Protocol):
    """What a host needs of its network, beyond what its transport needs."""

    seed: int
    #: Wall-clock time (Unix seconds) at virtual time 0.
    epoch: float

    def trace_fault(self, what: str, host_index: int, value: int) -> None: ...

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None: ...


class HostCrashed(PeerUnavailable):
    """This host is crashed: it can neither send nor receive until it restarts."""


class SimHost(Host):
    """A node of the virtual network. Start its code with ``host.start(fn, *args)``."""

    def __init__(
        self,
        network: HostNetwork,
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
        self.inbox = DatagramInbox(self)
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
            except Exception:
                # A crash cancels the host's tasks, and their clean-up may then fail (a server saving
                # its experts on a crashed host): the process is gone, and its errors with it.
                if self.up and self.incarnation == incarnation:
                    raise
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
        self.inbox = DatagramInbox(self)
        self.network.trace_fault("restart", self.index, self.incarnation)

    def wall_time(self) -> float:
        return self.network.epoch + trio.current_time() + self.clock_skew

    async def compute(self, fn: Callable[..., T], *args: Any, flops: float = 0.0) -> T:
        """Run ``fn`` while virtual time stands still, then charge its cost from the device profile.

        Work of announced size (``flops > 0``) never calls ``host.bridge`` (the ``Host`` contract), so
        it runs right here, on the loop's thread: a thread hop cost a fifth of a simulated expert
        call. Other work runs in a worker thread while this task blocks the trio loop synchronously
        (see ``simulator.compute``); if it calls ``host.bridge.run``, the task awaits that coroutine
        in virtual time (other tasks run meanwhile, and the host's device is free for other compute)
        and hands the result back.
        """
        await self.checkpoint_up()
        async with self._device:
            if flops > 0:
                result = fn(*args)
            else:
                result = await self.bridge.run_in_worker(fn, args, self._device)
            await trio.sleep(self.profile.cost(flops))
        return result
