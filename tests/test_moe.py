"""RemoteMixtureOfExperts against a local mixture with the same weights, real and simulated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch

from tesseract.client import Client
from tesseract.client.moe import RemoteMixtureOfExperts
from tests.experts import local_twin, make_backend
from tests.moe_swarm import start_bootstrap, start_expert_server
from tests.worlds import World

HIDDEN = 8
GRID = (2, 3)


def grid_uids() -> list[str]:
    return [f"ffn.{i}.{j}" for i in range(GRID[0]) for j in range(GRID[1])]


def grid_backends() -> tuple[dict, dict]:
    """A backend per expert of the grid, and an untouched twin of each to compute expectations."""
    backends = {uid: make_backend(uid, "ffn", HIDDEN, seed=i) for i, uid in enumerate(grid_uids())}
    return backends, {uid: local_twin(backend) for uid, backend in backends.items()}


@asynccontextmanager
async def client_of_one_server(world: World, backends: dict) -> AsyncIterator[Client]:
    """A bootstrap node, one server holding ``backends``, and a client that joined through it."""
    boot = await start_bootstrap(world)
    await start_expert_server(world, list(backends.values()), [boot.address])
    async with Client.attach(await world.new_host(), [boot.address]) as client:
        yield client


def local_mixture(
    moe: RemoteMixtureOfExperts, twins: dict, x: torch.Tensor, failed: set[str]
) -> torch.Tensor:
    """What the layer should compute: softmax over the chosen experts that did not fail."""
    logits = moe.proj(x).split(moe.grid_size, dim=-1)
    rows = []
    for row, experts in enumerate(moe.last_routing):
        alive = [e for e in experts if e.uid not in failed]
        scores = torch.stack([sum(logits[d][row, c] for d, c in enumerate(e.coordinates)) for e in alive])
        weights = torch.softmax(scores, dim=0)
        outputs = torch.stack([twins[e.uid].module(x[row : row + 1])[0] for e in alive])
        rows.append((weights[:, None] * outputs).sum(0))
    return torch.stack(rows)


def run_mixture_check(world: World, failed_server: bool) -> None:
    backends, twins = grid_backends()
    uids = grid_uids()
    # Two healthy servers; a third holds ffn.1.* and dies after announcing them, when asked to.
    groups = [uids[:3], uids[3:4], uids[4:]]

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        hosts = []
        for group in groups:
            host, _ = await start_expert_server(world, [backends[u] for u in group], [boot.address])
            hosts.append(host)
        if failed_server:
            await world.crash(hosts[2])
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            torch.manual_seed(5)
            moe = RemoteMixtureOfExperts(
                in_features=HIDDEN,
                grid_size=GRID,
                uid_prefix="ffn",
                client=client,
                k_best=4,
                forward_timeout=5,
            )
            x = torch.randn(6, HIDDEN, requires_grad=True)
            target = torch.randn(6, HIDDEN)

            def step() -> torch.Tensor:
                out = moe(x)
                (out * target).sum().backward()
                return out.detach()

            out = await client.host.compute(step)
            grad_x, grad_gate = x.grad.clone(), moe.proj.weight.grad.clone()
            failed = set(moe.last_failures)
            assert failed == ({u for u in groups[2]} if failed_server else set()), moe.last_failures
            assert all(len(experts) == 4 for experts in moe.last_routing)

            x.grad = None
            moe.proj.weight.grad = None
            expected = local_mixture(moe, twins, x, failed)
            (expected * target).sum().backward()
            torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=0)
            torch.testing.assert_close(grad_x, x.grad, atol=1e-5, rtol=0)
            torch.testing.assert_close(grad_gate, moe.proj.weight.grad, atol=1e-5, rtol=0)

    world.run(main)


def test_mixture_equals_a_local_mixture_with_the_same_weights(world: World) -> None:
    run_mixture_check(world, failed_server=False)


def test_mixture_masks_out_experts_whose_server_died(world: World) -> None:
    run_mixture_check(world, failed_server=True)


def test_switch_mixture_routes_each_sample_to_one_expert_and_balances_the_grid(world: World) -> None:
    from tesseract.client import RemoteSwitchMixtureOfExperts

    backends, twins = grid_backends()

    async def main(world: World) -> None:
        async with client_of_one_server(world, backends) as client:
            torch.manual_seed(3)
            switch = RemoteSwitchMixtureOfExperts(
                in_features=HIDDEN, grid_size=GRID, uid_prefix="ffn", client=client, jitter=0.1
            )
            x = torch.randn(16, HIDDEN)

            def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
                switch.eval()  # no jitter: the routing is the gate's own choice
                with torch.no_grad():
                    return switch(x)

            out, balance = await client.host.compute(evaluate)
            with torch.no_grad():
                log_probs = [p.log_softmax(-1) for p in switch.proj(x).split(GRID, dim=-1)]
            expected, share = [], [torch.zeros(size) for size in GRID]
            for row, experts in enumerate(switch.last_routing):
                (best,) = experts
                brute = max(
                    ((i, j) for i in range(GRID[0]) for j in range(GRID[1])),
                    key=lambda c: float(log_probs[0][row, c[0]] + log_probs[1][row, c[1]]),
                )
                assert best.coordinates == brute
                p = (log_probs[0][row, brute[0]] + log_probs[1][row, brute[1]]).exp()
                expected.append(p * twins[best.uid].module(x[row : row + 1])[0])
                for d in range(2):
                    share[d][brute[d]] += 1 / len(x)
            torch.testing.assert_close(out, torch.stack(expected).detach(), atol=1e-5, rtol=0)
            balance_expected = (
                sum(GRID[d] * (share[d] * log_probs[d].exp().mean(0)).sum() for d in range(2)) / 2
            )
            torch.testing.assert_close(balance, balance_expected.detach(), atol=1e-6, rtol=0)

            def train_step() -> None:
                switch.train()
                out, balance = switch(x)
                (out.pow(2).mean() + 0.01 * balance).backward()

            await client.host.compute(train_step)
            assert switch.proj.weight.grad is not None and switch.proj.weight.grad.abs().sum() > 0

    world.run(main)


def test_trio_code_gets_the_same_mixture_without_threads(world: World) -> None:
    backends, twins = grid_backends()

    async def main(world: World) -> None:
        async with client_of_one_server(world, backends) as client:
            torch.manual_seed(5)
            moe = RemoteMixtureOfExperts(
                in_features=HIDDEN, grid_size=GRID, uid_prefix="ffn", client=client, k_best=3
            )
            x = torch.randn(6, HIDDEN)
            out = await moe.forward_async(x)  # straight from a trio task: no compute, no bridge
            with torch.no_grad():
                expected = local_mixture(moe, twins, x, failed=set())
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
            # ...and exactly what ``forward`` (torch code, through the bridge) computes.
            torch.testing.assert_close(out, (await client.host.compute(moe, x)).detach(), atol=1e-6, rtol=0)

    world.run(main)
