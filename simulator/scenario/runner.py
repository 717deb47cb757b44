"""Running a scenario: its swarm of real DHT nodes, expert servers and trainers on a ``SimNetwork``,
with churn and faults as the file says, and metrics recorded as it goes.

The protocol code is Tesseract's own (``DHTNode``, ``ExpertServer``, ``Client``, ``Trainer``); the
simulator only supplies hosts, links, virtual time and the faults. Every random choice the runner
makes (whom a fault hits, session lengths, which key a probe reads) comes from generators seeded by
the scenario's seed, so one scenario and seed give one trace hash.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from simulator.compute import DeviceProfile
from simulator.distributions import Distribution, Jittered, as_distribution
from simulator.links import LinkProfile
from simulator.network import SimNetwork, SimulationDeadlock, run_simulation
from simulator.scenario.checks import dht_bootstrap_group, trace_member
from simulator.scenario.devices import PRESETS
from simulator.scenario.members import Member, RoleContext
from simulator.scenario.metrics import Recorder
from simulator.scenario.schema import Fault, Scenario, Target
from simulator.scenario.units import parse_duration

#: How long a probe record lives, and how often the probe stores it again (from a random live node:
#: the steady population of publishers that keeps a real swarm's records alive).
PROBE_TTL = 3600.0
PROBE_REFRESH = 300.0


@dataclass
class RunResult:
    complete: bool
    trace_hash: str
    virtual_seconds: float
    wall_seconds: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class ScenarioRun:
    """One run of a scenario; ``run()`` drives it to the end (or to Ctrl+C) and returns the result."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        base_dir: Path,
        work_dir: Path,
        progress: bool = True,
    ) -> None:
        self.scenario = scenario
        self.base_dir = base_dir
        self.work_dir = work_dir  # checkpoints of servers that keep them
        self.progress = progress
        self.recorder = Recorder(warmup=scenario.warmup, interval=scenario.metrics.interval)
        self.rng = random.Random(f"scenario:{scenario.seed}")
        self.network = self._build_network()
        self.members: list[Member] = []
        self.by_group: dict[str, list[Member]] = {}
        self.now = 0.0
        self._was_training: dict[str, bool] = {}
        self.notes: list[str] = [
            f"group {group.name}: compute modelled, not run: each {group.server.expert_cls} call is "
            "charged its flops on the group's device as virtual time; tensors keep their real sizes"
            for group in scenario.groups
            if group.server is not None and group.server.compute == "modelled"
        ]
        self._zones: dict[str, int] = {}
        self.context = RoleContext(
            seed=scenario.seed,
            base_dir=base_dir,
            work_dir=work_dir,
            recorder=self.recorder,
            families=frozenset(scenario.metrics.record),
            interval=scenario.metrics.interval,
            on_trained=lambda member: self._check_finished(),
        )
        #: Trainer groups that others wait for (``start.after``), set once every member is done.
        self._finished: dict[str, trio.Event] = {
            group.start.after: trio.Event() for group in scenario.groups if group.start.after is not None
        }
        self._end = trio.CancelScope()  # cancelled to end the run early (``end_when_trained``)
        self._declare_metrics()

    # ----- building the world ---------------------------------------------------------------------

    def _build_network(self) -> SimNetwork:
        spec = self.scenario.network
        latency: Distribution = spec.latency.build() if spec.latency is not None else as_distribution(0.01)
        if spec.jitter:
            latency = Jittered(latency, spec.jitter)
        return SimNetwork(seed=self.scenario.seed, latency=latency, loss=spec.loss, tick=self.scenario.tick)

    def _setup_hosts(self) -> None:
        scenario, network = self.scenario, self.network
        spec = network_spec = scenario.network
        zone_of: dict[Any, int] = {}
        graph = None
        if network_spec.regions:
            zone_of = {name: number for number, name in enumerate(sorted(network_spec.regions))}
            self._link_regions(zone_of)
        elif network_spec.topology is not None:
            from simulator.scenario.topology import load_graph

            graph = load_graph(network_spec.topology, self.base_dir)
        attach: list[tuple[Member, Any]] = []
        graph_nodes = list(graph.nodes) if graph is not None else []
        for group in scenario.groups:
            members = self.by_group.setdefault(group.name, [])
            for index in range(group.count):
                device = PRESETS[group.device] if isinstance(group.device, str) else None
                if device is None:
                    assert not isinstance(group.device, str)
                    device = DeviceProfile(group.device.flops, group.device.overhead)
                host = network.add_host(f"{group.name}-{index}:4000", profile=device)
                member = Member(group, index, host, group.region)
                members.append(member)
                self.members.append(member)
                if group.region is not None:
                    network.set_zone(host.address, zone_of[group.region])
                if graph is not None:
                    node = (
                        group.node if group.node is not None else graph_nodes[len(attach) % len(graph_nodes)]
                    )
                    node = node if node in graph else str(node)
                    attach.append((member, node))
                bandwidth = (
                    network_spec.regions[group.region].bandwidth
                    if group.region is not None and network_spec.regions[group.region].bandwidth is not None
                    else spec.bandwidth
                )
                if bandwidth is not None and (bandwidth.up is not None or bandwidth.down is not None):
                    access = network.access(host.address)
                    access.up, access.down = bandwidth.up, bandwidth.down
        if graph is not None:
            self._link_graph(graph, attach)

    def _link_regions(self, zone_of: dict[str, int]) -> None:
        regions = self.scenario.network.regions
        default = self.network.default_link
        jitter = self.scenario.network.jitter
        for a, region in regions.items():
            for b in regions:
                latency_spec = region.latency.get(b) or regions[b].latency.get(a)
                latency = latency_spec.build() if latency_spec is not None else default.latency
                if jitter:
                    latency = Jittered(latency, jitter)
                losses = [x for x in (regions[a].loss, regions[b].loss) if x is not None]
                loss = 1 - math.prod(1 - x for x in losses) if losses else default.loss
                self.network.set_zone_link(zone_of[a], zone_of[b], LinkProfile(latency, None, loss))

    def _link_graph(self, graph: Any, attach: list[tuple[Member, Any]]) -> None:
        from simulator.scenario.topology import path_profiles

        used = sorted({node for _, node in attach}, key=str)
        zone_of = {node: number for number, node in enumerate(used)}
        for (a, b), (latency, loss) in path_profiles(graph, used).items():
            self.network.set_zone_link(zone_of[a], zone_of[b], LinkProfile(latency, None, loss))
        for member, node in attach:
            self.network.set_zone(member.host.address, zone_of[node])
            data = graph.nodes[node]
            if "up" in data or "down" in data:
                access = self.network.access(member.host.address)
                access.up, access.down = data.get("up"), data.get("down")

    # ----- metrics --------------------------------------------------------------------------------

    def _declare_metrics(self) -> None:
        families = set(self.scenario.metrics.record)
        r = self.recorder
        r.declare("live.members", unit="nodes", title="Live members per group")
        if "dht" in families:
            r.declare("dht.get_success", unit="share", title="DHT get success", kind="events")
            r.declare("dht.get_latency", unit="s", title="DHT get latency (found records)", kind="events")
            r.declare("dht.get_rounds", unit="rounds", title="DHT get rounds (found records)", kind="events")
            r.declare(
                "net.reach", unit="share", title="DHT ping success, by where the peer is", kind="events"
            )
        if "rpc" in families:
            r.declare(
                "rpc.call_latency", unit="s", title="RPC latency (answered calls), per method", kind="events"
            )
            r.declare("rpc.call_success", unit="share", title="RPC calls answered, per method", kind="events")
            r.declare("rpc.serve_time", unit="s", title="Time serving a request, per method", kind="events")
        if "grid" in families:
            r.declare("grid.findable", unit="share", title="Share of each grid's experts findable")
        if "traffic" in families:
            r.declare("traffic.messages", unit="messages", title="Messages sent per group", kind="counter")
            r.declare("traffic.bytes", unit="bytes", title="Bytes sent per group", kind="counter")
        if "training" in families:
            r.declare("train.samples", unit="samples", title="Samples trained per group", kind="counter")
            r.declare(
                "train.disagreement",
                unit="relative",
                title="How far a group's trainers' own parameters are apart (max |p - mean| / |mean|)",
            )
            r.declare(
                "train.throughput",
                unit="samples/s",
                title="Samples trained per second in the steady state (so far)",
                figure="last",
            )
            r.declare("train.loss", unit="loss", title="Training loss (mean over the interval)")
            r.declare(
                "train.updates",
                unit="steps",
                title="Steps each trainer had taken at its latest test (mean)",
            )
            r.declare(
                "train.accuracy",
                unit="share",
                title="Test accuracy (latest epoch, mean over trainers)",
                against="train.updates",
            )
        if "failures" in families:
            r.declare("train.failed_calls", unit="calls", title="Failed expert calls by kind", kind="counter")
        if "servers" in families:
            r.declare("server.batch_size", unit="samples", title="Server batch sizes", kind="events")
        r.declare("churn.session", unit="s", title="Measured session lengths", kind="events")

    async def _sample_forever(self) -> None:
        interval = self.scenario.metrics.interval
        while True:
            self._sample(trio.current_time())
            await trio.sleep(interval)

    def _sample(self, t: float) -> None:
        r, families = self.recorder, set(self.scenario.metrics.record)
        for group, members in self.by_group.items():
            r.sample("live.members", t, sum(m.alive for m in members), label=group)
            if "traffic" in families:
                msgs = sum(self.network.sent_messages[m.host.index] for m in members)
                nbytes = sum(self.network.sent_bytes[m.host.index] for m in members)
                r.sample("traffic.messages", t, msgs, label=group)
                r.sample("traffic.bytes", t, nbytes, label=group)
            trainers = [m for m in members if m.group.role == "trainer"]
            if trainers and "training" in families:
                samples = sum(self._trainer_total(m, "samples") for m in trainers)
                r.sample("train.samples", t, samples, label=group)
                # The steady state: each trainer from its first finished step to its latest (the
                # first waits for lookups, and until it ends nothing can), summed. A trainer that
                # runs a few long steps one after another is measured as well as one with many.
                # One more sample when the group stops, so its last finishes count.
                training = any(self._training(m) for m in trainers)
                rates = [
                    rate
                    for m in trainers
                    if (trainer := m.services.get("trainer")) is not None
                    and (rate := trainer.steady_samples_per_s()) is not None
                ]
                if rates and (training or self._was_training.get(group, False)):
                    r.sample("train.throughput", t, math.fsum(rates), label=group)
                self._was_training[group] = training
                losses: list[float] = []
                accuracy: list[float] = []
                updates: list[int] = []
                for m in trainers:
                    trainer = m.services.get("trainer")
                    if trainer is None:
                        continue
                    seen = m.services.get("losses_seen", 0)
                    losses.extend(trainer.state.losses[seen:])
                    m.services["losses_seen"] = len(trainer.state.losses)
                    if trainer.state.test_accuracy:
                        accuracy.append(trainer.state.test_accuracy[-1])
                        updates.append(trainer.state.test_steps[-1])
                from simulator.scenario.roles import disagreement  # torch: only with trainers

                apart = disagreement(trainers)
                if apart is not None:
                    r.sample("train.disagreement", t, apart, label=group)
                if losses:
                    r.sample("train.loss", t, sum(losses) / len(losses), label=group)
                if accuracy:
                    r.sample("train.updates", t, sum(updates) / len(updates), label=group)
                    r.sample("train.accuracy", t, sum(accuracy) / len(accuracy), label=group)
            if trainers and "failures" in families:
                kinds: dict[str, float] = {}
                for m in trainers:
                    for kind, value in self._failures(m).items():
                        kinds[kind] = kinds.get(kind, 0) + value
                for kind, value in sorted(kinds.items()):
                    r.sample("train.failed_calls", t, value, label=f"{group}:{kind}")

    @staticmethod
    def _training(member: Member) -> bool:
        """Whether the member is alive with a trainer that has steps left."""
        trainer = member.services.get("trainer")
        if not member.alive or trainer is None:
            return False
        limit = trainer.config.max_steps
        return limit is None or trainer.state.steps + trainer.state.failed_steps < limit

    def _trainer_total(self, member: Member, what: str) -> float:
        trainer = member.services.get("trainer")
        current = getattr(trainer.state, what) if trainer is not None else 0
        return member.carried.get(what, 0) + current

    def _failures(self, member: Member) -> dict[str, float]:
        kinds = {
            k.removeprefix("failures:"): v for k, v in member.carried.items() if k.startswith("failures:")
        }
        for kind, value in self._live_failures(member).items():
            kinds[kind] = kinds.get(kind, 0) + value
        return kinds

    @staticmethod
    def _live_failures(member: Member) -> dict[str, float]:
        trainer = member.services.get("trainer")
        kinds: dict[str, float] = {}
        if trainer is None:
            return kinds
        for mixture in trainer.mixtures:
            for key, value in mixture.stats.items():
                if key.endswith("_calls") or key.endswith("_failures"):
                    continue
                if key.startswith(("forward_", "backward_")):
                    kinds[key] = kinds.get(key, 0) + value
        return kinds

    # ----- members' lives ---------------------------------------------------------------------------

    def _dht_peers(self, exclude: Member | None = None) -> list[str]:
        """Up to three live DHT nodes to join through (none: this member starts a new DHT)."""

        def usable(m: Member) -> bool:
            return m is not exclude and m.group.role in ("dht", "server") and m.group.inbound

        chosen = self._pick_ready(3, usable)
        return [m.host.address for m in chosen]

    def _pick_ready(self, count: int, usable: Callable[[Member], bool] = lambda m: True) -> list[Member]:
        """Up to ``count`` distinct random members that are up with their services ready, drawn by
        trying random members first (a scan of 10,000 members per probe would cost more than the
        probe), then from a full scan when few are ready."""
        chosen: dict[int, Member] = {}
        members, rng = self.members, self.rng
        for _ in range(20 * count):
            m = members[rng.randrange(len(members))]
            if m.alive and m.ready and usable(m):
                chosen[m.host.index] = m
                if len(chosen) == count:
                    return list(chosen.values())
        ready = [m for m in members if m.alive and m.ready and usable(m) and m.host.index not in chosen]
        extra = rng.sample(ready, min(count - len(chosen), len(ready)))
        return [*chosen.values(), *extra]

    def _start_member(self, member: Member) -> None:
        if member.alive:
            return
        host = member.host
        if not host.up:
            host.restart()
        member.alive, member.ready, member.started, member.trained = True, False, True, False
        member.session_started = trio.current_time()
        member.stopped = trio.Event()
        member.body = trio.CancelScope()
        host.start(self._life, member, name=f"{member.name}:life")

    async def _life(self, member: Member) -> None:
        from simulator.scenario import roles  # loads torch

        try:
            await roles.run_member(self.context, member, self._dht_peers(exclude=member))
        finally:
            self._retire_services(member)
            member.stopped.set()

    def _retire_services(self, member: Member) -> None:
        trainer = member.services.get("trainer")
        if trainer is not None:
            member.carried["samples"] = member.carried.get("samples", 0) + trainer.state.samples
            for kind, value in self._live_failures(member).items():
                key = f"failures:{kind}"
                member.carried[key] = member.carried.get(key, 0) + value
        member.services.clear()
        member.ready = False

    async def depart(self, member: Member, *, graceful: bool) -> None:
        """The member leaves: gracefully (its code finishes: a DHT node says goodbye, a server saves)
        or by crashing."""
        if not member.alive:
            return
        member.alive = False
        self.recorder.observe(
            "churn.session",
            trio.current_time(),
            trio.current_time() - member.session_started,
            label=member.group.name,
        )
        if graceful:
            member.body.cancel()  # its code finishes: a DHT node hands over its records, a server saves
            with trio.move_on_after(30):
                await member.stopped.wait()
        member.host.crash()
        self._check_finished()

    # ----- churn ----------------------------------------------------------------------------------

    def _done(self, group: str) -> bool:
        """Every member of the trainer group has taken its steps or is gone."""
        return all(m.trained or (m.started and not m.alive) for m in self.by_group[group])

    def _check_finished(self) -> None:
        """Start the phases whose group is done; end the run if every trainer is (and it should)."""
        for group, event in self._finished.items():
            if not event.is_set() and self._done(group):
                event.set()
        trainers = [g.name for g in self.scenario.groups if g.trainer is not None]
        if self.scenario.end_when_trained and not self._end.cancel_called and all(map(self._done, trainers)):
            self.notes.append(f"{trio.current_time():.1f} s: every trainer has taken its steps: the run ends")
            self._end.cancel()

    async def _churn(self, member: Member, start_at: float) -> None:
        group = member.group
        churn = group.churn
        if group.start.after is not None:  # the start counts from the end of the group's phase
            await self._finished[group.start.after].wait()
            start_at += trio.current_time()
        await _sleep_until(start_at)
        if churn is None:
            self._start_member(member)
            return
        if churn.trace is not None:
            await self._replay_trace(member)
            return
        assert churn.session is not None
        session: Distribution = churn.session.build()
        downtime: Distribution = (churn.downtime or churn.session).build()
        rng = random.Random(f"churn:{self.scenario.seed}:{member.host.index}")
        while True:
            self._start_member(member)
            await trio.sleep(session.sample(rng))
            while churn.min_alive and sum(m.alive for m in self.by_group[group.name]) <= churn.min_alive:
                await trio.sleep(1.0)  # the floor: wait for another member to come back
            await self.depart(member, graceful=rng.random() < churn.graceful)
            await trio.sleep(downtime.sample(rng))

    async def _replay_trace(self, member: Member) -> None:
        churn = member.group.churn
        assert churn is not None and churn.trace is not None
        sessions = []
        import csv

        for row in csv.reader((self.base_dir / churn.trace).read_text().splitlines()):
            if not row or row[0].strip().startswith("#") or row[0].strip() == "node":
                continue
            if trace_member(row[0], member.group.name, member.group.count) == member.index:
                sessions.append((parse_duration(row[1].strip()), parse_duration(row[2].strip())))
        for start, end in sorted(sessions):
            await _sleep_until(start)
            self._start_member(member)
            await _sleep_until(end)
            await self.depart(member, graceful=False)

    # ----- faults ---------------------------------------------------------------------------------

    def _targets(self, target: Target, rng: random.Random, *, alive: bool | None = True) -> list[Member]:
        chosen = [
            m
            for m in self.members
            if (target.group is None or m.group.name == target.group)
            and (target.region is None or m.region == target.region)
            and (alive is None or m.alive == alive)
        ]
        if target.count is not None:
            return rng.sample(chosen, min(target.count, len(chosen)))
        if target.share is not None:
            return rng.sample(chosen, round(target.share * len(chosen)))
        return chosen

    def _side(self, names: list[str]) -> list[str]:
        return [
            m.host.address
            for m in self.members
            if m.group.name in names or (m.region is not None and m.region in names)
        ]

    async def _fault(self, number: int, fault: Fault) -> None:
        await _sleep_until(fault.at)
        rng = random.Random(f"fault:{self.scenario.seed}:{number}")
        undo: Callable[[], Any] | None = None
        kind = fault.kind
        if kind == "crash":
            hit = self._targets(fault.target, rng)  # type: ignore[arg-type]
            for member in hit:
                await self.depart(member, graceful=False)

            def undo() -> None:
                for member in hit:
                    self._start_member(member)
        elif kind == "restart":
            for member in self._targets(fault.target, rng, alive=False):  # type: ignore[arg-type]
                self._start_member(member)
        elif kind == "partition":
            self.network.partition(*(self._side(side) for side in fault.between or []))
            undo = self.network.heal
        elif kind == "heal":
            self.network.heal()
        else:
            hit = self._targets(fault.target, rng, alive=None)  # type: ignore[arg-type]
            undo = self._apply_node_fault(fault, hit)
        self.notes.append(
            f"{_clock(fault.at)}: {kind}" + (f" for {_clock(fault.lasts)}" if fault.lasts else "")
        )
        if fault.lasts is not None and undo is not None:
            await trio.sleep(fault.lasts)
            undo()

    def _apply_node_fault(self, fault: Fault, hit: list[Member]) -> Callable[[], None] | None:
        network = self.network
        if fault.kind == "slow":
            factor = fault.factor or 1.0
            before = {m.host.index: m.host.profile for m in hit}
            for m in hit:
                p = m.host.profile
                m.host.profile = DeviceProfile(p.flops_per_s / factor, p.overhead_s * factor)

            def undo_slow() -> None:
                for m in hit:
                    m.host.profile = before[m.host.index]

            return undo_slow
        if fault.kind == "degrade":
            for m in hit:
                access = network.access(m.host.address)
                access.extra_latency = fault.latency.build() if fault.latency is not None else None
                access.extra_loss = fault.loss or 0.0

            def undo_degrade() -> None:
                for m in hit:
                    access = network.access(m.host.address)
                    access.extra_latency, access.extra_loss = None, 0.0

            return undo_degrade
        if fault.kind == "clog":
            for m in hit:
                network.clog(m.host.address, fault.lasts or 0.0)
            return None
        if fault.kind == "skew":
            for m in hit:
                m.host.clock_skew = fault.skew or 0.0

            def undo_skew() -> None:
                for m in hit:
                    m.host.clock_skew = 0.0

            return undo_skew
        if fault.kind == "fail_calls":
            for m in hit:
                m.services["fault_rate"] = fault.rate
                server = m.services.get("server")
                if server is not None:
                    server.fault_rate = fault.rate

            def undo_fail() -> None:
                for m in hit:
                    m.services.pop("fault_rate", None)
                    server = m.services.get("server")
                    if server is not None:
                        server.fault_rate = m.group.server.fault_rate if m.group.server else 0.0

            return undo_fail
        raise AssertionError(f"unhandled fault kind {fault.kind}")

    # ----- probes ---------------------------------------------------------------------------------

    def _probe_nodes(self, count: int) -> list[Member]:
        """Random live DHT nodes that accept requests (readers and writers for the probe)."""

        def usable(m: Member) -> bool:
            return "dht" in m.services and m.group.inbound

        return self._pick_ready(count, usable)

    async def _probe(self) -> None:
        probe = self.scenario.metrics.probe
        rng = random.Random(f"probe:{self.scenario.seed}")
        keys = [f"probe-{i}" for i in range(probe.keys)]
        # Records stored while the swarm forms would live on its first few nodes only: store once
        # every group has started (the probe's reads before then fall in the warm-up anyway).
        formed = max(group.start.at + group.start.ramp for group in self.scenario.groups) + 5.0
        await _sleep_until(min(formed, self.scenario.warmup or formed))
        while not self._probe_nodes(1):
            await trio.sleep(1.0)
        stored_at = -math.inf
        nursery = self.network.nursery
        assert nursery is not None
        while True:
            now = trio.current_time()
            if now - stored_at >= PROBE_REFRESH:
                stored_at = now
                async with trio.open_nursery() as stores:
                    for key in keys:
                        for writer in self._probe_nodes(1):
                            expiration = writer.host.wall_time() + PROBE_TTL
                            stores.start_soon(_quietly, writer.services["dht"].store, key, key, expiration)
            await trio.sleep(rng.expovariate(probe.rate))
            pair = self._probe_nodes(2)
            if pair:
                nursery.start_soon(self._probe_get, pair[0], rng.choice(keys))
            if len(pair) == 2:
                nursery.start_soon(self._probe_reach, pair[0], pair[1])

    async def _probe_get(self, reader: Member, key: str) -> None:
        node = reader.services.get("dht")
        if node is None:
            return
        started = trio.current_time()
        rounds_before = node.stats["get_rounds"]
        try:
            found = await node.get(key, use_local=False)
        except Exception:  # the reader crashed mid-get, or the record is unreadable: a failed get
            found = None
        if not reader.alive:
            return  # the reader died: not the DHT's failure
        self.recorder.observe("dht.get_success", started, 1.0 if found is not None else 0.0)
        if found is not None:
            self.recorder.observe("dht.get_latency", started, trio.current_time() - started)
            self.recorder.observe("dht.get_rounds", started, node.stats["get_rounds"] - rounds_before)

    async def _probe_reach(self, reader: Member, peer: Member) -> None:
        node = reader.services.get("dht")
        if node is None:
            return
        started = trio.current_time()
        try:
            answered = await node.ping(peer.host.address)
        except Exception:
            answered = False
        if not (reader.alive and peer.alive):
            return
        where = "same region" if reader.region == peer.region else "cross region"
        self.recorder.observe("net.reach", started, 1.0 if answered else 0.0, label=where)

    async def _grid_probe(self) -> None:
        from simulator.scenario import roles

        interval = self.scenario.metrics.interval
        while True:
            await trio.sleep(interval)
            await roles.sample_grids(self.context, self.members, self.scenario.groups)

    # ----- the run --------------------------------------------------------------------------------

    async def _main(self, network: SimNetwork) -> None:
        scenario = self.scenario
        self._setup_hosts()
        families = set(scenario.metrics.record)
        nursery = network.nursery
        assert nursery is not None
        # The first DHT-capable member starts alone: everyone else joins through someone.
        bootstrap = dht_bootstrap_group(scenario)
        assert bootstrap is not None  # checked at load
        first = self.by_group[bootstrap.name][0]
        for group in scenario.groups:
            members = self.by_group[group.name]
            ramp = group.start.ramp
            for i, member in enumerate(members):
                offset = ramp * i / len(members) if ramp else 0.0
                start_at = group.start.at + offset
                if member is not first and group.start.at == 0 and not ramp and group.start.after is None:
                    start_at = max(start_at, 1.0)  # let the first node come up
                nursery.start_soon(self._churn, member, start_at)
        self._check_finished()  # a group of no members is done from the start
        for number, fault in enumerate(scenario.faults):
            nursery.start_soon(self._fault, number, fault)
        nursery.start_soon(self._sample_forever)
        if "dht" in families:
            nursery.start_soon(self._probe)
        if "grid" in families and any(g.role == "trainer" for g in scenario.groups):
            nursery.start_soon(self._grid_probe)
        with self._end:
            await self._advance(scenario.duration)
        self._sample(trio.current_time())

    async def _advance(self, duration: float) -> None:
        """Sleep to the end, moving the progress bar."""
        bar = None
        if self.progress:
            from tqdm import tqdm

            class Bar(tqdm):
                monitor_interval = 0  # no monitor thread: a Ctrl+C it took would not reach the loop

            bar = Bar(total=round(duration), unit="s", desc="virtual time", leave=True, dynamic_ncols=True)
        started = time.perf_counter()
        step = max(1.0, duration / 200)
        try:
            while (now := trio.current_time()) < duration:
                await trio.sleep(min(step, duration - now))
                self.now = trio.current_time()
                if bar is not None:
                    bar.n = round(self.now)
                    wall = time.perf_counter() - started
                    live = sum(m.alive for m in self.members)
                    bar.set_postfix_str(f"{self.now / wall if wall else 0:.1f}x, {live} live", refresh=False)
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()

    def run(self) -> RunResult:
        started = time.perf_counter()
        complete, error, threads = False, None, None
        try:  # Ctrl+C may come while torch loads, too
            threads = _torch_threads(1)  # compute runs one call at a time: one thread is fastest (-20%)
            run_simulation(self._main, self.network)
            complete = True
        except BaseException as exc:  # Ctrl+C or a deadlock: the report still says how far it got
            # Either may come alone or in a task's exception group (Ctrl+C lands in whatever runs).
            if _find(exc, KeyboardInterrupt) is not None:
                error = "interrupted"
            elif (deadlock := _find(exc, SimulationDeadlock)) is not None:
                error = str(deadlock)
            else:
                raise
        finally:
            if threads is not None:
                _torch_threads(threads)
        virtual = self.network.now
        return RunResult(
            complete=complete,
            trace_hash=self.network.trace_hash,
            virtual_seconds=virtual,
            wall_seconds=time.perf_counter() - started,
            error=error,
            notes=self.notes,
        )


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself if it is a ``kind``, or the first ``kind`` in its exception group."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _torch_threads(count: int) -> int:
    """Set torch's intra-op threads; returns the number before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    return before


async def _sleep_until(t: float) -> None:
    delay = t - trio.current_time()
    if delay > 0:
        await trio.sleep(delay)


async def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(Exception):  # a store from a node that crashed meanwhile
        await fn(*args)


def _clock(seconds: float | None) -> str:
    from simulator.scenario.units import format_duration

    return format_duration(seconds or 0.0)


__all__ = ["Member", "RunResult", "ScenarioRun"]
