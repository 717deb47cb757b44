"""RemoteMixtureOfExperts against a local mixture with the same weights, real and simulated."""

from __future__ import annotations

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
    backends = {uid: make_backend(uid, "ffn", HIDDEN, seed=i) for i, uid in enumerate(grid_uids())}
    twins = {uid: local_twin(backend) for uid, backend in backends.items()}
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
