"""Many trainers, one model: trainers' own parameters averaged in groups through the swarm."""

from __future__ import annotations

import torch
import trio
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tesseract.client import Client
from tesseract.client.averaging import AveragingConfig, ParameterAverager, form_groups
from tests.moe_swarm import start_bootstrap
from tests.worlds import SimWorld, World

CONFIG = AveragingConfig(group_size=4, window=1.0, lead=0.5, timeout=2.0)


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


async def one_round(averager: ParameterAverager) -> None:
    assert await averager.start_round()
    while averager.running:
        await trio.sleep(0.05)
    averager.apply_pending()


async def trainers(world: World, models: list[nn.Module], config: AveragingConfig, body, averagers=None):
    """Start a host, a client and an averager per model (``averagers``: a class per model, if not the
    default) and run ``body(index, averager, host)`` on each host: (the hosts, the indices of the
    bodies that ended so far)."""
    boot = await start_bootstrap(world)
    done: set[int] = set()
    hosts = []

    async def member(index: int, module: nn.Module, host) -> None:
        cls = averagers[index] if averagers else ParameterAverager
        async with (
            Client.attach(host, [boot.address]) as client,
            cls.start(client, module.parameters(), config) as averager,
        ):
            await body(index, averager, host)
        done.add(index)

    for index, module in enumerate(models):
        host = await world.new_host()
        hosts.append(host)
        world.start(host, member, index, module, host)
    return hosts, done


async def wait_for(done: set[int], indices) -> None:
    with trio.fail_after(120):
        while not set(indices) <= done:
            await trio.sleep(0.1)


@given(st.lists(st.text(min_size=1, max_size=6), max_size=40), st.integers(0, 10**6), st.integers(2, 9))
def test_groups_hold_every_member_once_and_none_alone(members, window, size) -> None:
    groups = form_groups(members, window, size)
    flat_members = [m for g in groups for m in g]
    assert sorted(flat_members) == sorted(set(members))
    if len(set(members)) >= 2:
        assert all(2 <= len(g) < 2 * size for g in groups)
    assert groups == form_groups(list(reversed(members)), window, size)  # the same list, any order


def test_eight_trainers_with_different_parameters_converge_to_one_set() -> None:
    models = [model(seed) for seed in range(8)]
    start = torch.stack([flat(m) for m in models])
    stats = []

    async def body(index: int, averager: ParameterAverager, host) -> None:
        for _ in range(25):
            await one_round(averager)
        stats.append(averager.stats)
        await trio.sleep(5)  # others may still pull from us

    async def main(world: World) -> None:
        _, done = await trainers(world, models, CONFIG, body)
        await wait_for(done, range(8))

    SimWorld(seed=3).run(main)
    end = torch.stack([flat(m) for m in models])
    assert (end - end[0]).abs().max() < 1e-4
    # They met in the middle: the average of all is kept (every round is a mean of equal weights).
    torch.testing.assert_close(end[0], start.mean(dim=0), atol=1e-3, rtol=0)
    assert all(s["rounds"] == 25 and s["left_out"] == 0 for s in stats)


def test_a_member_crashing_mid_round_does_not_stall_the_others() -> None:
    models = [model(seed) for seed in range(6)]
    config = AveragingConfig(group_size=8, window=1.0, lead=0.5, timeout=2.0)
    ended: dict[int, float] = {}
    stats = {}

    async def main(world: World) -> None:
        async def body(index: int, averager: ParameterAverager, host) -> None:
            assert await averager.start_round()
            started = trio.current_time()
            while averager.running:
                await trio.sleep(0.05)
            ended[index] = trio.current_time() - started
            averager.apply_pending()
            stats[index] = averager.stats
            await trio.sleep(5)

        hosts, done = await trainers(world, models, config, body)
        await trio.sleep(0.3)  # all registered in the DHT, before the round's boundary
        await world.crash(hosts[5])
        await wait_for(done, range(5))

    SimWorld(seed=4).run(main)
    survivors = torch.stack([flat(m) for m in models[:5]])
    assert (survivors - survivors[0]).abs().max() < 1e-6
    assert all(stats[i]["left_out"] == 1 and stats[i]["averaged_with"] == 4 for i in range(5))
    assert all(ended[i] < config.lead + config.window + config.timeout + 1 for i in range(5))


class NaNAverager(ParameterAverager):
    def offer(self, snapshot: torch.Tensor) -> torch.Tensor:
        return torch.full_like(snapshot, float("nan"))


class WrongShapeAverager(ParameterAverager):
    def offer(self, snapshot: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(snapshot) + 1)


class WrongTypeAverager(ParameterAverager):
    def offer(self, snapshot: torch.Tensor) -> torch.Tensor:
        return snapshot.double()


def test_a_hostile_members_tensors_are_dropped_and_never_reach_the_parameters() -> None:
    models = [model(seed) for seed in range(7)]
    hostile = [NaNAverager, WrongShapeAverager, WrongTypeAverager]
    classes = [ParameterAverager] * 4 + hostile
    honest_start = torch.stack([flat(m) for m in models[:4]])
    stats = {}

    async def body(index: int, averager: ParameterAverager, host) -> None:
        await one_round(averager)
        stats[index] = averager.stats
        await trio.sleep(5)

    async def main(world: World) -> None:
        config = AveragingConfig(group_size=8, window=1.0, lead=0.5)
        _, done = await trainers(world, models, config, body, classes)
        await wait_for(done, range(7))

    SimWorld(seed=5).run(main)
    honest = torch.stack([flat(m) for m in models[:4]])
    assert torch.isfinite(honest).all()
    torch.testing.assert_close(honest, honest_start.mean(dim=0).expand_as(honest), atol=1e-6, rtol=0)
    assert all(stats[i]["bad_tensors"] == 3 and stats[i]["averaged_with"] == 3 for i in range(4))
