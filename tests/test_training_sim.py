"""Training through the swarm in the simulator: convergence, and failures that must not stop it."""

from __future__ import annotations

import trio

from simulator.host import DeviceProfile
from tesseract.client import Client
from tests.moe_swarm import start_bootstrap
from tests.training_swarm import GRID, grid_row, make_trainer, serve, wait_for_steps
from tests.worlds import SimWorld


def run_training(epochs: int, fault_rate: float = 0.0, seed: int = 0, max_steps: int | None = None) -> dict:
    world = SimWorld(seed=seed)

    async def main(world) -> dict:
        boot = await start_bootstrap(world)
        for row in range(GRID[0]):
            await serve(world, grid_row(row), boot, fault_rate=fault_rate)
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            trainer = make_trainer(client, epochs)
            trainer.config.max_steps = max_steps
            summary = await trainer.run_async()
            return {**summary, "losses": trainer.state.losses, "trace": world.network.trace_hash}

    return world.run(main)


def test_the_same_seed_trains_the_same_way_bit_for_bit() -> None:
    first, second = (run_training(epochs=1, fault_rate=0.1, max_steps=12) for _ in range(2))
    assert first["losses"] == second["losses"] and first["trace"] == second["trace"]
    assert first["failed_calls"] > 0
    other = run_training(epochs=1, fault_rate=0.1, seed=1, max_steps=12)
    assert other["trace"] != first["trace"]


def test_a_mixture_classifier_learns_the_digits_in_the_simulator() -> None:
    summary = run_training(epochs=6)
    assert summary["failed_calls"] == 0 and summary["failed_steps"] == 0
    assert summary["final_test_accuracy"] >= 0.95, summary


def test_it_still_learns_when_a_tenth_of_expert_calls_fail() -> None:
    summary = run_training(epochs=6, fault_rate=0.1)
    share = summary["failed_calls"] / summary["expert_calls"]
    assert 0.07 <= share <= 0.13, summary
    assert summary["final_test_accuracy"] >= 0.93, summary


def test_training_goes_on_through_dead_slow_crashing_joining_and_failing_experts() -> None:
    """32 experts: 3 dead from the start, 3 slow beyond the timeout, 5 failing a third of their
    backward calls, 8 on a server that crashes mid-training, 5 on a server that joins mid-training."""
    world = SimWorld(seed=3)
    join_at, crash_at = 30, 50

    async def main(world) -> None:
        boot = await start_bootstrap(world)
        await serve(world, grid_row(0), boot)
        crashing = await serve(world, grid_row(1), boot)
        await serve(world, grid_row(2, range(5)), boot, fault_rate=0.33, faulty_kinds=("backward",))
        dead = await serve(world, grid_row(2, range(5, 8)), boot)
        await world.crash(dead)
        slow = world.network.add_host(profile=DeviceProfile(flops_per_s=1e3))  # seconds per call
        await serve(world, grid_row(3, range(3)), boot, host=slow)
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            trainer = make_trainer(client, epochs=5, cache_ttl=0.5)  # a short run: see the newcomer soon
            mixture = trainer.mixtures[0]
            joined: list = []

            async def chaos() -> None:
                await wait_for_steps(trainer, join_at)
                joined.append(await serve(world, grid_row(3, range(3, 8)), boot))
                await wait_for_steps(trainer, crash_at)
                await world.crash(crashing)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                summary = await trainer.run_async()
                nursery.cancel_scope.cancel()

        stats = mixture.stats
        assert stats["forward_unreachable"] > 0, stats  # the dead and the crashed
        assert stats["forward_straggler"] > 0, stats  # the slow
        assert stats["backward_refused"] > 0, stats  # the failing backward
        losses = trainer.state.losses
        assert summary["steps"] >= 0.95 * 115, summary
        early, late = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
        assert late < early / 4, (early, late)
        assert summary["final_test_accuracy"] >= 0.9, summary
        assert joined, "the joining server never started"
        newcomer = {uid for uid, _ in mixture.client.expert_infos}
        assert any(uid.startswith("ffn.3.") and int(uid.split(".")[2]) >= 3 for uid in newcomer), newcomer

    world.run(main)


def test_a_trainer_whose_swarm_is_gone_stops_with_a_clear_error_instead_of_spinning() -> None:
    import pytest

    from tesseract.train.trainer import TrainingStalled

    world = SimWorld(seed=2)

    async def main(world) -> None:
        boot = await start_bootstrap(world)
        hosts = [await serve(world, grid_row(row), boot) for row in range(2)]
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            trainer = make_trainer(client, epochs=3)

            async def crash_everything() -> None:
                await wait_for_steps(trainer, 5)
                for host in hosts:
                    await world.crash(host)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(crash_everything)
                with pytest.raises(TrainingStalled, match=r"30 steps in a row failed; the last: .*ffn"):
                    await trainer.run_async()
            assert trainer.state.steps >= 5 and trainer.state.consecutive_failures == 30
            assert trio.current_time() - started < 300  # backed off, within bounds

    world.run(main)
