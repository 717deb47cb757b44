"""The scenario language: typed structures that a scenario file (YAML) decodes into.

msgspec decodes and checks the types, the allowed values and unknown keys in one pass, and names the
field path of the first problem; quantities with units are parsed on the way (``simulator.scenario.
units``). Checks that span sections (a fault aimed at a group that exists, a grid that holds a server's
experts) are in ``simulator.scenario.checks``. Every field has a default where one makes sense, and
``resolved`` writes the scenario back out with all of them filled in, for the report.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from simulator.distributions import (
    Distribution,
    Exponential,
    Fixed,
    LogNormal,
    ShiftedPareto,
    Uniform,
    weibull_with_mean,
)
from simulator.scenario.units import parse_bandwidth, parse_duration, parse_size


class Duration(float):
    """Seconds; written as a number or as text with a unit (``"50 ms"``)."""


class SignedDuration(float):
    """Seconds that may be negative (a clock running behind)."""


class Size(int):
    """Bytes; written as a number or as text with a unit (``"4 MiB"``)."""


class Bandwidth(float):
    """Bytes per second; written as a number or as text (``"10 Mbit"``)."""


# ----- distributions --------------------------------------------------------------------------

_STRUCT = {"forbid_unknown_fields": True, "kw_only": True, "tag_field": "kind"}


class FixedSpec(msgspec.Struct, tag="fixed", **_STRUCT):
    value: Duration

    def build(self) -> Distribution:
        return Fixed(self.value)


class UniformSpec(msgspec.Struct, tag="uniform", **_STRUCT):
    low: Duration
    high: Duration

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise _field("high", f"{self.high:g} s is below low ({self.low:g} s)")

    def build(self) -> Distribution:
        return Uniform(self.low, self.high)


class ExponentialSpec(msgspec.Struct, tag="exponential", **_STRUCT):
    mean: Duration

    def __post_init__(self) -> None:
        if not self.mean >= 0:
            raise _field("mean", f"cannot be negative, got {self.mean}")

    def build(self) -> Distribution:
        # A mean of 0 is the end point of a latency sweep: always 0.
        return Exponential(self.mean) if self.mean > 0 else Fixed(0.0)


class LogNormalSpec(msgspec.Struct, tag="lognormal", **_STRUCT):
    median: Duration
    sigma: float

    def __post_init__(self) -> None:
        _positive("median", self.median)
        _positive("sigma", self.sigma)

    def build(self) -> Distribution:
        return LogNormal(self.median, self.sigma)


class WeibullSpec(msgspec.Struct, tag="weibull", **_STRUCT):
    """Given by its mean, as OverSim's lifetime churn does; ``shape`` < 1 is heavy-tailed."""

    mean: Duration
    shape: float

    def __post_init__(self) -> None:
        _positive("mean", self.mean)
        _positive("shape", self.shape)

    def build(self) -> Distribution:
        return weibull_with_mean(self.mean, self.shape)


class ParetoSpec(msgspec.Struct, tag="pareto", **_STRUCT):
    """Shifted Pareto given by its mean and tail index ``alpha`` (> 1 for a finite mean)."""

    mean: Duration
    alpha: float

    def __post_init__(self) -> None:
        _positive("mean", self.mean)
        if not self.alpha > 1:
            raise _field("alpha", f"must be above 1 for the mean to exist, got {self.alpha:g}")

    def build(self) -> Distribution:
        return ShiftedPareto(self.mean, self.alpha)


DistributionSpec = FixedSpec | UniformSpec | ExponentialSpec | LogNormalSpec | WeibullSpec | ParetoSpec


class Latency:
    """A link's latency: a duration (fixed), or a distribution (``{kind: exponential, mean: 50 ms}``)."""

    __slots__ = ("spec",)

    def __init__(self, spec: DistributionSpec) -> None:
        self.spec = spec

    def build(self) -> Distribution:
        return self.spec.build()

    @property
    def mean(self) -> float:
        spec = self.spec
        if isinstance(spec, FixedSpec):
            return spec.value
        if isinstance(spec, UniformSpec):
            return (spec.low + spec.high) / 2
        if isinstance(spec, LogNormalSpec):
            return spec.median * math.exp(spec.sigma**2 / 2)
        return spec.mean


# ----- the network ----------------------------------------------------------------------------


class Bandwidths(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A node's access link: what it can send (``up``) and receive (``down``) per second."""

    up: Bandwidth | None = None
    down: Bandwidth | None = None


class Region(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A region: its latency to each region (its own included: within the region), and defaults for
    the nodes in it. A pair given on one side only holds both ways."""

    latency: dict[str, Latency] = {}
    loss: float | None = None
    bandwidth: Bandwidths | None = None

    def __post_init__(self) -> None:
        _share("loss", self.loss)


class Topology(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A graph: a networkx generator by name and parameters, or a GML file in Shadow's format. Hosts
    attach to graph nodes; a path's latency is the shortest path's, its loss that of the path."""

    generator: str | None = None
    params: dict[str, Any] = {}
    gml: str | None = None
    #: The latency of an edge that does not give its own (generated graphs have none).
    edge_latency: Latency | None = None

    def __post_init__(self) -> None:
        if (self.generator is None) == (self.gml is None):
            raise ValueError("give either a generator or a gml file")


class Network(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    latency: Latency | None = None  # default: 10 ms
    jitter: Duration = Duration(0.0)
    loss: float = 0.0
    bandwidth: Bandwidths | None = None
    regions: dict[str, Region] = {}
    topology: Topology | None = None

    def __post_init__(self) -> None:
        _share("loss", self.loss)
        if self.regions and self.topology is not None:
            raise ValueError("give regions or a topology, not both")


# ----- groups ---------------------------------------------------------------------------------


class Device(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a node computes with: virtual seconds per call = overhead + flops / flops_per_s."""

    flops: float
    overhead: Duration = Duration(20e-6)

    def __post_init__(self) -> None:
        _positive("flops", self.flops)


class Start(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When a group's members start: at ``at``, spread evenly over ``ramp``; with ``after``, ``at``
    counts from the moment every member of that trainer group has taken its ``steps`` (or is gone):
    one phase of a run after another, whatever each phase's speed."""

    at: Duration = Duration(0.0)
    ramp: Duration = Duration(0.0)
    after: str | None = None


class Churn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Members leave after a session and come back after a down time, each drawn anew; or a trace
    (CSV rows ``node, start, end``) is replayed."""

    session: DistributionSpec | None = None
    downtime: DistributionSpec | None = None
    #: The share of departures that leave gracefully (say goodbye) rather than crash.
    graceful: float = 0.0
    #: Departures that would leave fewer live members than this wait for a member to come back.
    min_alive: int = 0
    trace: str | None = None

    def __post_init__(self) -> None:
        _share("graceful", self.graceful)
        for name in ("session", "downtime"):
            spec = getattr(self, name)
            # A member would come and go forever at one instant of virtual time.
            largest = next((getattr(spec, f) for f in ("mean", "value", "high") if hasattr(spec, f)), 1.0)
            if spec is not None and largest == 0:
                raise _field(name, "is always 0: a session and a down time must take some time")
        if self.min_alive < 0:
            raise _field("min_alive", f"cannot be negative, got {self.min_alive}")
        if self.trace is None and self.session is None:
            raise ValueError("churn needs a session distribution or a trace file")
        if self.trace is not None and (self.session is not None or self.downtime is not None):
            raise ValueError("a churn trace replaces session and downtime: give one or the other")


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Which experts, as uids and patterns split over the group's members (``ffn.[0:16].[0:16]``).
    experts: str
    expert_cls: Literal["ffn", "transformer", "nop", "paper-ffn", "paper-transformer"] = "ffn"
    #: ``real`` runs the experts' arithmetic; ``modelled`` skips it and charges the block's flops on
    #: the group's device as virtual time (tensors keep their real shapes: the network carries the
    #: real bytes). For blocks too large to compute here, such as the paper's.
    compute: Literal["real", "modelled"] = "real"
    hidden_dim: int = 64
    max_batch_size: int = 256
    announce_period: Duration = Duration(10.0)
    learning_rate: float = 1e-3
    #: Save experts this often (a member that crashes comes back from its last save); none: never.
    checkpoint_period: Duration | None = None
    #: A share of expert calls that fail on purpose.
    fault_rate: float = 0.0
    #: The same experts on every member (replicas) rather than split among them.
    replicate: bool = False
    #: Split round-robin (member i of n takes experts i, i+n, i+2n, ...) rather than in contiguous
    #: slices: the consecutive blocks of a chain then live on different servers, each hop a network
    #: hop, as in the paper's model-parallel baseline.
    interleave: bool = False

    def __post_init__(self) -> None:
        if self.replicate and self.interleave:
            raise _field("interleave", "replicas are not split: give replicate or interleave, not both")
        _positive("hidden_dim", self.hidden_dim)
        _positive("max_batch_size", self.max_batch_size)
        _positive("announce_period", self.announce_period)
        _share("fault_rate", self.fault_rate)


class AveragingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Trainers average their own parameters with each other (``tesseract.client.averaging``)."""

    #: A round every this many steps (at the next window boundary).
    every: int = 10
    #: Members per averaging group.
    group: int = 8
    #: Rounds start at multiples of this much time.
    window: Duration = Duration(5.0)
    #: Time to register before a boundary; less than ``window``.
    lead: Duration = Duration(1.0)
    #: Each pull's deadline.
    timeout: Duration = Duration(10.0)
    #: At the end of training, keep averaging this long (trainers finishing apart end on one model).
    settle: Duration = Duration(0.0)

    def __post_init__(self) -> None:
        _positive("every", self.every)
        if self.group < 2:
            raise _field("group", f"must be at least 2, got {self.group}")
        for name in ("window", "lead", "timeout"):
            _positive(name, getattr(self, name))
        if self.lead >= self.window:
            raise _field("lead", f"must be shorter than window ({self.window:g} s), got {self.lead:g} s")


class TrainerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A trainer's model: a digits classifier whose middle is a remote mixture of experts over
    ``grid`` (``model: mixture``), a chain of remote blocks, one after another (``model:
    sequential``, the ``blocks`` uids in order: the paper's model-parallel baseline), or one local
    feed-forward block as wide as a ``grid`` of experts side by side (``model: dense``: as many
    parameters as that mixture's experts, all of them computed for every sample)."""

    grid: list[int] = msgspec.field(default_factory=list)
    model: Literal["mixture", "sequential", "dense"] = "mixture"
    #: The chain of a sequential model, as uids and patterns (``ffn.[0:224]``).
    blocks: str | None = None
    average: AveragingSettings | None = None
    uid_prefix: str = "ffn"
    hidden_dim: int = 64
    k_best: int = 4
    k_min: int = 1
    forward_timeout: Duration = Duration(2.0)
    backward_timeout: Duration = Duration(2.0)
    timeout_after_k_min: Duration = Duration(0.2)
    #: ``digits`` (bundled), ``synthetic`` (random: nothing to learn, for throughput) or
    #: ``mnist:DIRECTORY`` (its four IDX files; relative to the scenario).
    dataset: str = "digits"
    batch_size: int = 64
    learning_rate: float = 3e-3
    #: Optimizer steps each trainer takes (failed steps count); none: until the run ends.
    steps: int | None = None
    #: Steps each trainer keeps under way at once (stale updates; the swarm stays busy while a
    #: step's requests cross the network).
    steps_in_flight: int = 1

    def __post_init__(self) -> None:
        if self.model in ("mixture", "dense") and (not self.grid or any(size < 1 for size in self.grid)):
            raise _field("grid", f"needs one or more positive sizes, got {self.grid}")
        if self.model == "sequential" and not self.blocks:
            raise _field("blocks", "a sequential model needs its blocks (uids or patterns, in order)")
        if self.model != "sequential" and self.blocks is not None:
            raise _field("blocks", f"only a sequential model takes blocks (a {self.model} one takes a grid)")
        if self.dataset not in ("digits", "synthetic") and not self.dataset.startswith("mnist:"):
            raise _field("dataset", f"use digits, synthetic or mnist:DIRECTORY, not {self.dataset!r}")
        for name in ("hidden_dim", "k_best", "k_min", "batch_size", "steps_in_flight"):
            _positive(name, getattr(self, name))
        _positive("learning_rate", self.learning_rate)
        if self.k_min > self.k_best:
            raise _field("k_min", f"{self.k_min} cannot exceed k_best ({self.k_best})")
        if self.steps is not None and self.steps < 1:
            raise _field("steps", f"must be positive, got {self.steps}")


class DHTSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The group's DHT nodes' settings (``tesseract.dht.DHTConfig``); unset: its defaults."""

    #: Bucket size, and how many nodes each lookup keeps asking.
    k: int | None = None
    #: Requests one lookup keeps in flight.
    alpha: int | None = None
    #: Nodes each record is stored on.
    replicas: int | None = None
    #: A bucket nobody looked into for this long is refreshed with a lookup.
    refresh: Duration | None = None
    #: Held records are stored again on the nodes then closest to them this often.
    republish: Duration | None = None
    #: One request's budget, its retry included.
    request_timeout: Duration | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            _positive(name, getattr(self, name))  # None (unset) passes
        if self.replicas is not None and self.k is not None and self.replicas > self.k:
            raise _field("replicas", f"{self.replicas} cannot exceed k ({self.k}): a lookup finds k nodes")


Role = Literal["dht", "server", "trainer"]


class Group(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    role: Role
    count: int = 1
    #: Where its members sit: a region of ``network.regions``, or a node of ``network.topology``.
    region: str | None = None
    node: int | str | None = None
    #: A preset (``simulator.scenario.devices``) or explicit figures.
    device: str | Device = "cpu"
    #: False: behind a NAT that admits no inbound connection (a DHT node then runs in client mode).
    inbound: bool = True
    start: Start = msgspec.field(default_factory=Start)
    churn: Churn | None = None
    dht: DHTSettings = msgspec.field(default_factory=DHTSettings)
    server: ServerSettings | None = None
    trainer: TrainerSettings | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise _field("name", f"a group name is letters, digits, '-' and '_', got {self.name!r}")
        if self.count < 0:
            raise _field("count", f"cannot be negative, got {self.count}")
        if self.role == "server" and self.server is None:
            raise ValueError("a server group needs a 'server' section (at least its experts)")
        if self.role == "trainer" and self.trainer is None:
            raise ValueError("a trainer group needs a 'trainer' section (at least its grid or blocks)")
        if self.role != "server" and self.server is not None:
            raise ValueError(f"a {self.role} group takes no 'server' section")
        if self.role != "trainer" and self.trainer is not None:
            raise ValueError(f"a {self.role} group takes no 'trainer' section")
        if self.role == "server" and not self.inbound:
            raise _field(
                "inbound", "a server must accept inbound connections (inbound: false is for dht and trainers)"
            )


# ----- faults ---------------------------------------------------------------------------------


class Target(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Whom a fault hits: members of ``group`` (all of them unless ``count`` or ``share``), or of
    ``region``, or both."""

    group: str | None = None
    region: str | None = None
    count: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if self.group is None and self.region is None:
            raise ValueError("a target names a group, a region, or both")
        if self.count is not None and self.share is not None:
            raise ValueError("give count or share, not both")
        if self.count is not None and self.count < 1:
            raise _field("count", f"must be positive, got {self.count}")
        _share("share", self.share)


FaultKind = Literal["crash", "restart", "partition", "heal", "slow", "degrade", "clog", "skew", "fail_calls"]
#: Kinds that hit nodes (and so need a target).
TARGETED = frozenset({"crash", "restart", "slow", "degrade", "clog", "skew", "fail_calls"})


class Fault(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    at: Duration
    kind: FaultKind
    #: How long it lasts (then it is undone: a crash restarts, a partition heals); none: for good.
    lasts: Duration | None = msgspec.field(default=None, name="for")
    target: Target | None = None
    #: partition: two or more sides, each a list of group or region names.
    between: list[list[str]] | None = None
    #: slow: compute takes this many times longer.
    factor: float | None = None
    #: degrade: extra latency and/or loss on the target's links.
    latency: Latency | None = None
    loss: float | None = None
    #: skew: the target's clock runs this far off.
    skew: SignedDuration | None = None
    #: fail_calls: the share of expert calls the target servers fail.
    rate: float | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if kind in TARGETED and self.target is None:
            raise ValueError(f"a {kind} fault needs a target")
        if kind == "partition":
            if not self.between or len(self.between) < 2 or not all(self.between):
                raise _field("between", "a partition needs two or more non-empty sides")
        elif self.between is not None:
            raise _field("between", f"is for partitions, not {kind}")
        if kind in ("restart", "heal") and self.lasts is not None:
            raise _field("for", f"a {kind} takes no 'for'")
        if kind == "slow" and self.factor is None:
            raise ValueError("a slow fault needs 'factor': how many times longer compute takes")
        if kind == "slow":
            _positive("factor", self.factor)
        if kind == "degrade" and self.latency is None and self.loss is None:
            raise ValueError("a degrade fault needs 'latency', 'loss' or both")
        _share("loss", self.loss)
        if kind == "skew" and self.skew is None:
            raise ValueError("a skew fault needs 'skew' (a duration, may be negative)")
        if kind == "fail_calls" and self.rate is None:
            raise ValueError("a fail_calls fault needs 'rate', the share of calls that fail")
        _share("rate", self.rate)
        if kind == "clog" and self.lasts is None:
            raise ValueError("a clog fault needs 'for': how long the node's messages are held")


# ----- metrics and the whole ------------------------------------------------------------------

MetricFamily = Literal["live", "dht", "grid", "rpc", "traffic", "training", "failures", "servers"]
ALL_FAMILIES: tuple[str, ...] = ("live", "dht", "grid", "rpc", "traffic", "training", "failures", "servers")


class Probe(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The DHT probe: records stored once the run starts, read from random live nodes."""

    keys: int = 16
    #: Gets per virtual second, over the whole swarm.
    rate: float = 2.0

    def __post_init__(self) -> None:
        _positive("keys", self.keys)
        _positive("rate", self.rate)


class Metrics(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval: Duration = Duration(10.0)
    record: list[MetricFamily] = msgspec.field(default_factory=lambda: list(ALL_FAMILIES))
    probe: Probe = msgspec.field(default_factory=Probe)

    def __post_init__(self) -> None:
        _positive("interval", self.interval)


class Sweep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What ``tesseract sim sweep FILE`` varies when not told (``--param``): a field path and the
    values it takes, as ``--set`` would give them."""

    param: str
    values: list[str | int | float]

    def __post_init__(self) -> None:
        if not self.param.strip():
            raise _field("param", "names the field to vary, e.g. network.latency.mean")
        if not self.values:
            raise _field("values", "needs at least one value")


class Scenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str = ""
    description: str = ""
    seed: int = 0
    duration: Duration
    #: Excluded from the metrics' summaries (the swarm forming).
    warmup: Duration = Duration(0.0)
    #: Virtual-time resolution of message delivery.
    tick: Duration = Duration(0.001)
    #: End the run as soon as every trainer has taken its ``steps`` (or is gone), ``duration`` being
    #: the limit: a run whose speed depends on what it measures takes no longer than it needs.
    end_when_trained: bool = False
    network: Network = msgspec.field(default_factory=Network)
    groups: list[Group]
    faults: list[Fault] = []
    metrics: Metrics = msgspec.field(default_factory=Metrics)
    #: Named sets of overrides (``path: value``, as ``--set`` takes them), chosen with ``--profile``.
    profiles: dict[str, dict[str, Any]] = {}
    sweep: Sweep | None = None

    def __post_init__(self) -> None:
        _positive("duration", self.duration)
        _positive("tick", self.tick)
        if not self.groups:
            raise _field("groups", "a scenario needs at least one group")


# ----- decoding -------------------------------------------------------------------------------


#: How a check on one field starts its message, so that the loader can put the field on the path
#: (msgspec places a ``__post_init__`` error at the structure, not at the field).
FIELD_PREFIX = "field "


def _field(name: str, reason: str) -> ValueError:
    return ValueError(f"{FIELD_PREFIX}{name}: {reason}")


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise _field(name, f"must be positive, got {value:g}")


def _share(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise _field(name, f"must be a share within [0, 1], got {value:g}")


def dec_hook(type_: type, value: Any) -> Any:
    """Builds the unit-bearing types from what YAML gave (msgspec adds the field path to errors)."""
    if type_ is Duration:
        return Duration(parse_duration(value))
    if type_ is SignedDuration:
        if isinstance(value, str) and value.lstrip().startswith("-"):
            return SignedDuration(-parse_duration(value.lstrip()[1:]))
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            return SignedDuration(-parse_duration(-value))
        return SignedDuration(parse_duration(value))
    if type_ is Size:
        return Size(parse_size(value))
    if type_ is Bandwidth:
        return Bandwidth(parse_bandwidth(value))
    if type_ is Latency:
        if isinstance(value, dict):
            try:
                return Latency(msgspec.convert(value, DistributionSpec, dec_hook=dec_hook))
            except msgspec.ValidationError as exc:
                raise ValueError(str(exc)) from None
        return Latency(FixedSpec(value=Duration(parse_duration(value))))
    raise NotImplementedError(f"no decoder for {type_}")


def enc_hook(value: Any) -> Any:
    if isinstance(value, Latency):
        return msgspec.to_builtins(value.spec, enc_hook=enc_hook)
    if isinstance(value, Size):
        return int(value)
    if isinstance(value, float):  # Duration, SignedDuration, Bandwidth
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def resolved(scenario: Scenario) -> dict[str, Any]:
    """The scenario as plain data with every default filled in (durations in seconds, sizes in bytes)."""
    return msgspec.to_builtins(scenario, enc_hook=enc_hook)


__all__ = [
    "ALL_FAMILIES",
    "FIELD_PREFIX",
    "TARGETED",
    "Bandwidth",
    "Bandwidths",
    "Churn",
    "Device",
    "DistributionSpec",
    "Duration",
    "Fault",
    "Group",
    "Latency",
    "Metrics",
    "Network",
    "Probe",
    "Region",
    "Scenario",
    "ServerSettings",
    "SignedDuration",
    "Size",
    "Start",
    "Target",
    "Topology",
    "TrainerSettings",
    "dec_hook",
    "enc_hook",
    "resolved",
]
