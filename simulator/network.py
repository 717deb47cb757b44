"""A virtual network of many simulated hosts in one trio run, in virtual time.

How time moves: trio runs with a ``VirtualClock`` that never moves by itself. A single pump task waits
until every task is blocked (``wait_all_tasks_blocked``), then either delivers the messages due at
the earliest pending tick or jumps the clock to trio's next deadline, whichever comes first. Messages
therefore cost no timer each: delivery times are rounded up to a tick (1 ms by default), and one pump
wake-up hands every message of that tick to its receiver by rescheduling the parked task directly.

What is modelled: per-link latency (fixed or drawn), bandwidth (a message occupies its link for
size/bandwidth), loss (datagrams dropped; stream segments retransmitted after ``retransmit_delay``),
crashes (connections reset, datagrams dropped, listeners gone, the host's tasks cancelled) and
restarts, and partitions (datagrams dropped, stream data held until the partition heals, as TCP does).

Determinism: all randomness comes from RNGs seeded from the network's seed, trio's scheduler is
seeded (``simulator.determinism``), and every delivery and fault is folded into ``trace_hash``.
"""

from __future__ import annotations

import gc
import heapq
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from simulator.clock import VirtualClock
from simulator.determinism import deterministic_scheduling
from simulator.distributions import Distribution, as_distribution
from simulator.host import SimHost
from simulator.links import AccessLink, LinkProfile
from simulator.trace import KIND_DATAGRAM, KIND_DROP, KIND_FAULT, KIND_STREAM, Event, Trace

T = TypeVar("T")

DEFAULT_TICK = 0.001


class SimulationDeadlock(RuntimeError):
    """Every task is blocked, nothing is in flight and no timer is set: the run can never progress."""


class SimNetwork:
    """Hosts, links, faults and the delivery schedule. Run code in it with ``run_simulation``."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float | Distribution = 0.01,
        bandwidth: float | None = None,
        loss: float = 0.0,
        tick: float = DEFAULT_TICK,
        retransmit_delay: float = 0.2,
        epoch: float = 1_767_225_600.0,
        record_events: bool = False,
    ) -> None:
        if tick <= 0:
            raise ValueError("tick must be positive")
        self.seed = seed
        self.rng = random.Random(f"network:{seed}")
        self.default_link = LinkProfile(as_distribution(latency), bandwidth, loss)
        self.tick = tick
        self.retransmit_delay = retransmit_delay
        #: Wall-clock time (Unix seconds) at virtual time 0, for ``host.wall_time()``.
        self.epoch = epoch
        self.hosts: dict[str, SimHost] = {}
        self._hosts_by_index: list[SimHost] = []
        #: Per host index: messages and bytes it sent (stream segments and datagrams, lost ones too).
        self.sent_messages: list[int] = []
        self.sent_bytes: list[int] = []
        self._links: dict[tuple[int, int], LinkProfile] = {}
        #: Zones (regions, graph nodes): a host's zone, and the link between two zones.
        self._zone: dict[int, int] = {}
        self._zone_links: dict[tuple[int, int], LinkProfile] = {}
        self._access: dict[int, AccessLink] = {}
        self._link_free_at: dict[tuple[int, int], float] = {}
        self._group: dict[int, int] = {}  # host index -> partition group; absent = group 0
        self._held: list[tuple[int, int, Callable[..., None], Any, int, Any]] = []
        self._due: dict[int, list[tuple[Callable[..., None], Any]]] = {}
        self._ticks: list[int] = []
        self._trace = Trace(keep_events=record_events)
        self.messages_delivered = 0
        self.messages_dropped = 0
        self.nursery: trio.Nursery | None = None
        self.clock: VirtualClock | None = None
        #: Virtual time, cached: only the pump moves the clock, so this always equals trio.current_time().
        self.now = 0.0

    # ----- hosts -------------------------------------------------------------------------------

    def add_host(self, address: str | None = None, **host_options: Any) -> SimHost:
        """Create a host (up, with nothing running). ``address`` defaults to ``nodeN:4000``."""
        index = len(self._hosts_by_index)
        address = address or f"node{index}:4000"
        if address in self.hosts:
            raise ValueError(f"address {address} is already taken")
        host = SimHost(self, index, address, **host_options)
        self.hosts[address] = host
        self._hosts_by_index.append(host)
        self.sent_messages.append(0)
        self.sent_bytes.append(0)
        return host

    def traffic(self, address: str) -> tuple[int, int]:
        """Messages and bytes the host at ``address`` has sent so far."""
        index = self.hosts[address].index
        return self.sent_messages[index], self.sent_bytes[index]

    def add_hosts(self, count: int, **host_options: Any) -> list[SimHost]:
        return [self.add_host(**host_options) for _ in range(count)]

    def host(self, address: str) -> SimHost:
        return self.hosts[address]

    # ----- links and faults --------------------------------------------------------------------

    def set_link(
        self,
        a: str,
        b: str,
        *,
        latency: float | Distribution | None = None,
        bandwidth: float | None = None,
        loss: float | None = None,
    ) -> None:
        """Override the link between two hosts (both directions)."""
        base = self.default_link
        profile = LinkProfile(
            as_distribution(latency) if latency is not None else base.latency,
            bandwidth if bandwidth is not None else base.bandwidth,
            loss if loss is not None else base.loss,
        )
        i, j = self.hosts[a].index, self.hosts[b].index
        self._links[(i, j)] = self._links[(j, i)] = profile

    def set_zone(self, address: str, zone: int) -> None:
        """Place a host in a zone: messages between zones use ``set_zone_link``'s profiles."""
        self._zone[self.hosts[address].index] = zone

    def set_zone_link(self, a: int, b: int, profile: LinkProfile) -> None:
        """The link between zones ``a`` and ``b`` (both directions; ``a == b``: within a zone)."""
        self._zone_links[(a, b)] = self._zone_links[(b, a)] = profile

    def access(self, address: str) -> AccessLink:
        """The host's own link (capacity, added latency and loss, clogs), created on first use."""
        index = self.hosts[address].index
        link = self._access.get(index)
        if link is None:
            link = self._access[index] = AccessLink()
        return link

    def clog(self, address: str, duration: float) -> None:
        """Hold every message the host sends or receives until ``duration`` from now."""
        link = self.access(address)
        link.clogged_until = max(link.clogged_until, self.now + duration)
        self.trace_fault("clog", self.hosts[address].index, round(duration * 1e3))

    def set_default_loss(self, loss: float) -> None:
        self.default_link = LinkProfile(self.default_link.latency, self.default_link.bandwidth, loss)
        self.trace_fault("loss", -1, int(loss * 1e6))

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: hosts in different groups cannot reach each other. Unlisted hosts form
        one more group together."""
        self._group = {}
        for number, group in enumerate(groups, start=1):
            for address in group:
                self._group[self.hosts[address].index] = number
        self.trace_fault("partition", -1, len(groups))

    def heal(self) -> None:
        """End the partition; stream data held across it is delivered now, plus latency."""
        self._group = {}
        self.trace_fault("heal", -1, 0)
        held, self._held = self._held, []
        for src, dst, deliver, payload, nbytes, in_order in held:
            self.schedule(src, dst, nbytes, deliver, payload, KIND_STREAM, in_order)

    def crash(self, address: str) -> None:
        self.hosts[address].crash()

    def restart(self, address: str) -> None:
        self.hosts[address].restart()

    def reachable(self, src: int, dst: int) -> bool:
        group = self._group
        return not group or group.get(src, 0) == group.get(dst, 0)

    # ----- the delivery schedule ---------------------------------------------------------------

    def link(self, src: int, dst: int) -> LinkProfile:
        link = self._links.get((src, dst))
        if link is None:
            zone = self._zone
            link = self._zone_links.get((zone.get(src, -1), zone.get(dst, -1)), self.default_link)
        return link

    def arrival_time(self, src: int, dst: int, nbytes: int, *, stream: bool) -> float | None:
        """When a message sent now arrives, or None if the link loses it (datagrams only)."""
        link = self._links.get((src, dst))
        if link is None:
            if self._zone_links:
                zone = self._zone
                link = self._zone_links.get((zone.get(src, -1), zone.get(dst, -1)), self.default_link)
            else:
                link = self.default_link
        if self._access:
            return self._arrival_with_access(link, src, dst, nbytes, stream)
        now = self.now
        if link.loss and self.rng.random() < link.loss:
            if not stream:
                return None
            now += self.retransmit_delay
        departure = now
        if link.bandwidth is not None:
            key = (src, dst)
            start = max(now, self._link_free_at.get(key, 0.0))
            departure = start + nbytes / link.bandwidth
            self._link_free_at[key] = departure
        return departure + link.latency.sample(self.rng)

    def _arrival_with_access(
        self, link: LinkProfile, src: int, dst: int, nbytes: int, stream: bool
    ) -> float | None:
        """``arrival_time`` when hosts have access links: the sender's upload queue, the path, the
        receiver's download queue, and any fault on either end."""
        sender, receiver = self._access.get(src), self._access.get(dst)
        rng, now = self.rng, self.now
        loss = link.loss
        for end in (sender, receiver):
            if end is not None and end.extra_loss:
                loss = 1.0 - (1.0 - loss) * (1.0 - end.extra_loss)
        if loss and rng.random() < loss:
            if not stream:
                return None
            now += self.retransmit_delay
        departure = now
        if sender is not None:
            departure = max(departure, sender.clogged_until)
            if sender.up is not None:
                departure = max(departure, sender.up_free_at) + nbytes / sender.up
                sender.up_free_at = departure
        if link.bandwidth is not None:
            key = (src, dst)
            departure = max(departure, self._link_free_at.get(key, 0.0)) + nbytes / link.bandwidth
            self._link_free_at[key] = departure
        arrival = departure + link.latency.sample(rng)
        for end in (sender, receiver):
            if end is not None and end.extra_latency is not None:
                arrival += end.extra_latency.sample(rng)
        if receiver is not None:
            arrival = max(arrival, receiver.clogged_until)
            if receiver.down is not None:
                arrival = max(arrival, receiver.down_free_at) + nbytes / receiver.down
                receiver.down_free_at = arrival
        return arrival

    def schedule_at(self, when: float, deliver: Callable[[Any], None], payload: Any) -> None:
        """Run ``deliver(payload)`` at the first tick at or after virtual time ``when``."""
        tick = math.ceil(when / self.tick)
        due = self._due.get(tick)
        if due is None:
            self._due[tick] = [(deliver, payload)]
            heapq.heappush(self._ticks, tick)
        else:
            due.append((deliver, payload))

    def schedule(
        self,
        src: int,
        dst: int,
        nbytes: int,
        deliver: Callable[[Any], None],
        payload: Any,
        kind: int,
        in_order: Any = None,
    ) -> bool:
        """Send a message over the src->dst link; False if it was lost on the way. ``in_order``: an
        object with a ``last_arrival`` (a stream's pipe), after whose latest message this one arrives."""
        self.sent_messages[src] += 1
        self.sent_bytes[src] += nbytes
        if not self.reachable(src, dst):
            if kind == KIND_STREAM:
                self._held.append((src, dst, deliver, payload, nbytes, in_order))
                return True
            self._drop(kind, src, dst, nbytes)
            return False
        when = self.arrival_time(src, dst, nbytes, stream=kind != KIND_DATAGRAM)
        if when is None:
            self._drop(kind, src, dst, nbytes)
            return False
        if in_order is not None:
            if when < in_order.last_arrival:
                when = in_order.last_arrival
            in_order.last_arrival = when
        self.schedule_at(when, deliver, payload)
        self._trace.record(self.now, kind, src, dst, nbytes)
        return True

    def _drop(self, kind: int, src: int, dst: int, nbytes: int) -> None:
        self.messages_dropped += 1
        self._trace.record(self.now, KIND_DROP, src, dst, nbytes * 8 + kind)

    # ----- trace -------------------------------------------------------------------------------

    def trace_fault(self, what: str, host_index: int, value: int) -> None:
        self._trace.label(what)
        if self.nursery is not None:
            self._trace.record(self.now, KIND_FAULT, host_index, -1, value)

    @property
    def trace_hash(self) -> str:
        """A digest of every delivery and fault so far: equal for equal runs (``simulator.trace``)."""
        return self._trace.hexdigest()

    @property
    def events(self) -> list[Event] | None:
        """Every trace record, when the network was made with ``record_events=True``."""
        return self._trace.events

    # ----- running -----------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Advance virtual time whenever every other task is blocked (see the module docstring)."""
        clock = self.clock
        assert clock is not None
        due, ticks, tick_length = self._due, self._ticks, self.tick
        wait_idle = trio.testing.wait_all_tasks_blocked
        statistics = trio.lowlevel.current_statistics
        while True:
            await wait_idle()
            now = self.now
            to_deadline = statistics().seconds_to_next_deadline
            if ticks:
                tick = ticks[0]
                when = tick * tick_length
                if when - now <= to_deadline:
                    heapq.heappop(ticks)
                    if when > now:
                        clock.jump(when - now)
                        self.now = clock.current_time()
                    batch = due.pop(tick)
                    self.messages_delivered += len(batch)
                    for deliver, payload in batch:
                        deliver(payload)
                    continue
            if to_deadline == math.inf:
                raise SimulationDeadlock(
                    f"at virtual time {now:.6f}s every task is blocked with no message in flight and no timer"
                )
            clock.jump(to_deadline)
            self.now = clock.current_time()

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        assert self.nursery is not None, "the simulation is not running"
        self.nursery.start_soon(async_fn, *args, name=name)


def run_simulation(
    main: Callable[[SimNetwork], Awaitable[T]], network: SimNetwork | None = None, **options
) -> T:
    """Run ``await main(network)`` inside a fresh simulated world and return its result.

    Everything runs in one ``trio.run`` with a virtual clock and a seeded scheduler. When ``main``
    returns, every task still running on any host is cancelled.
    """
    network = network if network is not None else SimNetwork(**options)
    clock = VirtualClock()
    network.clock = clock
    network.now = clock.current_time()

    async def root() -> T:
        # The pump lives in a nursery of its own, outside the hosts' tasks: when they are cancelled
        # (the run ended, or a task failed), their shielded clean-ups (a server saving, a node
        # leaving) still wait in virtual time, which only the pump moves.
        async with trio.open_nursery() as outer:
            outer.start_soon(network._pump, name="simulator-pump")
            try:
                async with trio.open_nursery() as nursery:
                    network.nursery = nursery
                    result = await main(network)
                    nursery.cancel_scope.cancel()
            finally:
                network.nursery = None
                outer.cancel_scope.cancel()
        return result

    with deterministic_scheduling(network.seed), _fewer_gc_passes():
        # Ctrl+C reaches ``main`` at its next checkpoint, never in whatever code happens to run:
        # raised there, it was now and then swallowed on the way (1 Ctrl+C in 28, where exactly was
        # not found), and a run of hours went on to its end.
        return trio.run(root, clock=clock, restrict_keyboard_interrupt_to_checkpoints=True)


@contextmanager
def _fewer_gc_passes(young_threshold: int = 50_000) -> Iterator[None]:
    """A simulation keeps millions of long-lived objects (tasks, pipes, connections); the default
    young-generation threshold (700) triggers collections that traverse them so often that they cost
    more than the simulation itself (measured: 15k -> 25k stream messages/s). Restored afterwards."""
    saved = gc.get_threshold()
    gc.set_threshold(young_threshold, saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
