"""What each kind of scenario member runs: a DHT node, an expert server (with its DHT node), or a
trainer. Tesseract's own classes, started as its commands start them; this module loads torch."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import torch
import trio

from simulator.scenario.checks import dataset_spec
from tesseract.client import Client
from tesseract.client.averaging import AveragingConfig, ParameterAverager
from tesseract.client.discovery import get_active_successors
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.client.sequential import RemoteSequential
from tesseract.dht import DHTConfig, DHTNode
from tesseract.expert_uid import parse_uid
from tesseract.runtime.backend import ExpertBackend, adam
from tesseract.runtime.zoo import FeedForward, make_expert, make_modelled_expert
from tesseract.server import ExpertServer
from tesseract.server.options import expand_experts
from tesseract.train.data import Dataset, load_dataset
from tesseract.train.model import MixtureClassifier, RemoteClassifier
from tesseract.train.trainer import TrainConfig, Trainer

if TYPE_CHECKING:
    from simulator.scenario.members import Member, RoleContext
    from simulator.scenario.schema import Group

_DATASETS: dict[str, Dataset] = {}


def _dataset(run: RoleContext, name: str) -> Dataset:
    """A trainer group's data set, loaded once per run's process (every trainer shares it)."""
    spec = dataset_spec(name, run.base_dir)
    if spec not in _DATASETS:
        _DATASETS[spec] = load_dataset(spec)
    return _DATASETS[spec]


def experts_of(member: Member) -> list[str]:
    """The member's share of its group's experts: a contiguous slice, every count-th one
    (interleaved), or all of them (replicas)."""
    settings = member.group.server
    assert settings is not None
    uids = expand_experts(settings.experts)
    if settings.replicate:
        return uids
    count = member.group.count
    if settings.interleave:
        return uids[member.index :: count]
    start = len(uids) * member.index // count
    end = len(uids) * (member.index + 1) // count
    return uids[start:end]


def dht_config(group: Group, *, client_mode: bool = False) -> DHTConfig:
    """The group's DHT settings over ``DHTConfig``'s defaults (a trainer's node only asks)."""
    settings = group.dht
    given = {
        "k": settings.k,
        "alpha": settings.alpha,
        "num_replicas": settings.replicas,
        "refresh_interval": settings.refresh,
        "republish_interval": settings.republish,
        "request_timeout": settings.request_timeout,
    }
    chosen = {name: value for name, value in given.items() if value is not None}
    return DHTConfig(client_mode=client_mode or not group.inbound, **chosen)


async def run_member(run: RoleContext, member: Member, peers: list[str]) -> None:
    """Start the member's services, run until cancelled, stop them. ``member.body`` cancelled is a
    graceful departure, as SIGTERM is for the commands: the services then stop as they would (a DHT
    node hands over its records, a server saves its experts)."""
    role = member.group.role
    async with AsyncExitStack() as stack:
        if role in ("dht", "server"):
            config = dht_config(member.group)
            node = member.services["dht"] = await stack.enter_async_context(
                DHTNode.start(member.host, peers, config=config, leave_gracefully=True)
            )
            _observe_requests(run, node.rpc.router)
            _observe_calls(run, node.rpc)
        if role == "server":
            await _serve(run, member, stack)
        trainer = await _train(run, member, peers, stack) if role == "trainer" else None
        member.ready = True
        with member.body:
            if trainer is not None:
                await trainer.run_async()
                member.trained = True
                run.on_trained(member)
            await trio.sleep_forever()  # trained its steps: stays in the swarm, idle


async def _serve(run: RoleContext, member: Member, stack: AsyncExitStack) -> None:
    settings = member.group.server
    assert settings is not None
    torch.manual_seed(run.seed * 1_000_003 + member.host.index)
    backends = []
    for uid in experts_of(member):
        build = make_modelled_expert if settings.compute == "modelled" else make_expert
        module, schema = build(settings.expert_cls, settings.hidden_dim)
        backends.append(
            ExpertBackend(
                uid,
                module,
                schema,
                optimizer=lambda params: adam(params, lr=settings.learning_rate),
                max_batch_size=settings.max_batch_size,
            )
        )
    checkpoint_dir = None
    options = {}
    if settings.checkpoint_period is not None:
        checkpoint_dir = run.work_dir / "checkpoints" / member.name
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        options["checkpoint_period"] = settings.checkpoint_period
    server = await stack.enter_async_context(
        ExpertServer.start(
            member.host,
            backends,
            dht=member.services["dht"],
            update_period=settings.announce_period,
            checkpoint_dir=checkpoint_dir,
            fault_rate=member.services.get("fault_rate", settings.fault_rate),
            **options,
        )
    )
    member.services["server"] = server
    _observe_requests(run, server.rpc.router)
    if "servers" in run.families:
        recorder = run.recorder

        def on_batch(uid: str, kind: str, rows: list[int]) -> None:
            recorder.observe("server.batch_size", trio.current_time(), sum(rows), label=kind)

        server.runtime.on_batch = on_batch


async def _train(run: RoleContext, member: Member, peers: list[str], stack: AsyncExitStack) -> Trainer:
    settings = member.group.trainer
    assert settings is not None
    client = await stack.enter_async_context(
        Client.attach(member.host, peers, dht_config=dht_config(member.group, client_mode=True))
    )
    _observe_calls(run, client.rpc)
    _observe_calls(run, client.require_dht().rpc)
    torch.manual_seed(run.seed * 1_000_003 + member.host.index)
    data = _dataset(run, settings.dataset)
    if settings.model == "sequential":
        chain = RemoteSequential(
            expand_experts(settings.blocks or ""),
            client,
            forward_timeout=settings.forward_timeout,
            backward_timeout=settings.backward_timeout,
        )
        model: torch.nn.Module = RemoteClassifier(data.features, data.classes, settings.hidden_dim, chain)
    elif settings.model == "dense":
        # As many parameters as the grid's experts together: their up and down layers side by side.
        width = 4 * settings.hidden_dim * math.prod(settings.grid)
        block = FeedForward(settings.hidden_dim, width=width)
        model = RemoteClassifier(data.features, data.classes, settings.hidden_dim, block)
    else:
        mixture = RemoteMixtureOfExperts(
            in_features=settings.hidden_dim,
            grid_size=tuple(settings.grid),
            uid_prefix=settings.uid_prefix,
            client=client,
            k_best=settings.k_best,
            k_min=settings.k_min,
            forward_timeout=settings.forward_timeout,
            backward_timeout=settings.backward_timeout,
            timeout_after_k_min=settings.timeout_after_k_min,
        )
        model = MixtureClassifier(data.features, data.classes, mixture)
    averager = None
    average = settings.average
    if average is not None:
        config = AveragingConfig(
            name=member.group.name,
            group_size=average.group,
            window=average.window,
            lead=average.lead,
            timeout=average.timeout,
        )
        averager = await stack.enter_async_context(
            ParameterAverager.start(client, list(model.parameters()), config)
        )
    config = TrainConfig(
        epochs=10**6,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=run.seed + member.host.index,
        log_every=0,
        max_steps=settings.steps,
        max_consecutive_failures=10**9,  # a swarm cut off for a while waits, as a volunteer would
        average_every=average.every if average is not None else 0,
        average_settle=average.settle if average is not None else 0.0,
        steps_in_flight=settings.steps_in_flight,
    )
    trainer = Trainer(model, data, client, config, report=lambda line: None, averager=averager)
    if averager is not None:
        member.services["averager"] = averager
    member.services["trainer"] = trainer
    member.services["client"] = client
    return trainer


def _observe_requests(run: RoleContext, router) -> None:
    """Each request the member served, timed (virtual time spent in the handler: batching, compute)."""
    if "rpc" not in run.families:
        return
    recorder = run.recorder

    def on_request(method: str, seconds: float, code: str | None) -> None:
        recorder.observe("rpc.serve_time", trio.current_time() - seconds, seconds, label=method)

    router.on_request = on_request


def _observe_calls(run: RoleContext, rpc) -> None:
    """Each call the member made, timed from send to answer, and whether it was answered."""
    if "rpc" not in run.families:
        return
    recorder = run.recorder

    def on_call(method: str, seconds: float, failure: str | None) -> None:
        started = trio.current_time() - seconds
        recorder.observe("rpc.call_success", started, 0.0 if failure else 1.0, label=method)
        if failure is None:
            recorder.observe("rpc.call_latency", started, seconds, label=method)

    rpc.on_call = on_call


async def sample_grids(run: RoleContext, members: list[Member], groups: list[Group]) -> None:
    """The share of each trainer grid whose experts a live trainer finds in the DHT now."""
    grids: dict[str, tuple[int, ...]] = {}
    for group in groups:
        if group.trainer is not None and group.trainer.model == "mixture":
            grids[group.trainer.uid_prefix] = tuple(group.trainer.grid)
    for prefix, grid in grids.items():
        finder_owner = next(
            (
                m
                for m in members
                if m.alive
                and "trainer" in m.services
                and m.group.trainer
                and m.group.trainer.uid_prefix == prefix
            ),
            None,
        )
        if finder_owner is None:
            continue
        dht = finder_owner.services["client"].require_dht()
        total = 1
        for size in grid:
            total *= size
        prefixes = [prefix]
        try:
            with trio.move_on_after(run.interval / 2):
                for size in grid:
                    successors = await get_active_successors(dht, prefixes, size)
                    prefixes = [f"{p}.{c}" for p in prefixes for c in sorted(successors[p]) if c < size]
        except Exception:
            continue
        found = len(prefixes) if all(len(parse_uid(p)[1]) == len(grid) for p in prefixes) else 0
        run.recorder.sample("grid.findable", trio.current_time(), found / total, label=prefix)


def disagreement(trainers: list[Member]) -> float | None:
    """For a group whose trainers average: max |p_i - mean| / |mean| over its live trainers' own
    parameters (0 when they train one model); None for other groups, or fewer than two."""
    vectors = [
        torch.cat([p.detach().reshape(-1) for p in m.services["averager"].parameters]).double()
        for m in trainers
        if m.alive and "averager" in m.services
    ]
    if len(vectors) < 2:
        return None
    stacked = torch.stack(vectors)
    mean = stacked.mean(dim=0)
    scale = float(mean.norm()) or 1.0
    return float((stacked - mean).norm(dim=1).max()) / scale


__all__ = ["disagreement", "experts_of", "run_member", "sample_grids"]
