"""Experts that answer NaN, announce a schema that does not fit, or come back with another one.

Every expert here is served by a real ``ExpertServer`` (``tests.experts:Class`` zoo entries), in both
worlds; the trainer's side must go on with the honest experts and keep its weights finite.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tesseract.client import Client, MixtureError, RemoteExpert, RemoteMixtureOfExperts
from tesseract.net.host import Host
from tests.experts import local_twin, make_backend
from tests.moe_swarm import start_bootstrap, start_expert_server
from tests.worlds import World

HIDDEN = 8


def mixture(client: Client, grid: tuple[int, ...], **options) -> RemoteMixtureOfExperts:
    torch.manual_seed(0)
    # Patient: every call here ends (answer or failure) at once, and none may count as a straggler.
    settings = {"forward_timeout": 30.0, "backward_timeout": 30.0, "timeout_after_k_min": 30.0}
    settings.update(options)
    return RemoteMixtureOfExperts(
        in_features=HIDDEN, grid_size=grid, uid_prefix="ffn", client=client, k_best=grid[-1], **settings
    )


def params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_experts_answering_nan_outputs_or_gradients_never_reach_the_trainers_weights(world: World) -> None:
    kinds = {"ffn.0.0": "ffn", "ffn.0.1": "ffn", "ffn.0.2": "tests.experts:NaNOutputs"}
    kinds["ffn.0.3"] = "tests.experts:NaNGradients"

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        for uid, kind in kinds.items():
            await start_expert_server(world, [make_backend(uid, kind, HIDDEN)], [boot.address])
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            # No cooldown: the hostile experts are asked, and answer NaN, at every step.
            moe = mixture(client, (1, 4), failure_cooldown=0.0)
            model = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), moe, nn.Linear(HIDDEN, 3))
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
            x, y = torch.randn(16, HIDDEN), torch.randint(0, 3, (16,))

            def step() -> None:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

            for _ in range(4):
                await client.host.compute(step)
                assert params_finite(model)
                assert all(len(experts) == 4 for experts in moe.last_routing)
            assert moe.stats["forward_bad_answer"] == 4, moe.stats  # ffn.0.2, every step
            assert moe.stats["backward_bad_answer"] == 4, moe.stats  # ffn.0.3, every step
            assert moe.last_failures == {
                "ffn.0.2": "outputs[0] contains NaN or infinite values",
                "ffn.0.3": "input gradients[0] contains NaN or infinite values",
            }
            assert moe.stats["backward_failures"] == 4 and moe.stats["forward_failures"] == 4

            # With a cooldown, a NaN answer leaves its expert out of the next step's routing.
            cautious = mixture(client, (1, 4), failure_cooldown=600.0)
            model[1] = cautious
            await client.host.compute(step)
            await client.host.compute(step)
            assert params_finite(model)
            assert {e.uid for experts in cautious.last_routing for e in experts} == {"ffn.0.0", "ffn.0.1"}

    world.run(main)


def test_an_expert_whose_schema_does_not_fit_the_mixture_is_its_failure_not_a_crash(world: World) -> None:
    honest = make_backend("ffn.0.0", "ffn", HIDDEN)
    twin = local_twin(honest)

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        await start_expert_server(world, [honest], [boot.address])
        await start_expert_server(
            world, [make_backend("ffn.0.1", "tests.experts:Widen", HIDDEN)], [boot.address]
        )
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            moe = mixture(client, (1, 2))
            with torch.no_grad():  # the misfit is every row's first choice, so it is asked first
                moe.proj.weight.zero_()
                moe.proj.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
            head = nn.Linear(HIDDEN, 3)
            x = torch.randn(5, HIDDEN)

            def step() -> torch.Tensor:
                out = moe(x)
                head(out).sum().backward()
                return out.detach()

            out = await client.host.compute(step)
            assert moe.last_routing[0][0].uid == "ffn.0.1"
            assert moe.last_failures == {
                "ffn.0.1": "announced (float32[rows, 8]) -> (float32[rows, 9]), "
                "the caller needs (float32[rows, 8]) -> (float32[rows, 8])"
            }
            assert moe.stats["forward_bad_answer"] == 1
            with torch.no_grad():
                torch.testing.assert_close(out, twin.module(x), atol=1e-5, rtol=0)  # the honest one alone

    world.run(main)


async def serve(world: World, host: Host, boot: Host, kind: str) -> None:
    await start_expert_server(world, [make_backend("ffn.0.0", kind, HIDDEN)], [boot.address], host=host)


def test_a_server_restarted_with_another_schema_is_asked_for_it_again(world: World) -> None:
    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        host = await world.new_host()
        await serve(world, host, boot, "tests.experts:Widen")
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            moe = mixture(client, (1, 1), failure_cooldown=0.0)
            x = torch.randn(4, HIDDEN)

            def failure() -> str:
                with pytest.raises(MixtureError):
                    moe(x)
                return moe.last_failures["ffn.0.0"]

            assert (await client.host.compute(failure)).startswith(
                "announced (float32[rows, 8]) -> (float32[rows, 9])"
            )

            await world.crash(host)
            host = await world.restart(host)
            await serve(world, host, boot, "ffn")  # now it fits
            out = await client.host.compute(moe, x)
            assert out.shape == (4, HIDDEN) and not moe.last_failures

            await world.crash(host)
            host = await world.restart(host)
            await serve(world, host, boot, "tests.experts:Widen")  # and now it does not again
            # The first answer contradicts the schema we hold; the next call asks the expert anew.
            stale = await client.host.compute(failure)
            assert stale == "outputs[0] is float32[4, 9], expected float32[4, 8]"
            fresh = await client.host.compute(failure)
            assert fresh.startswith("announced (float32[rows, 8]) -> (float32[rows, 9])"), fresh

    world.run(main)


def test_a_remote_expert_follows_its_server_to_a_new_schema(world: World) -> None:
    async def main(world: World) -> None:
        host = await world.new_host()
        await start_expert_server(world, [make_backend("ffn.0.0", "ffn", HIDDEN)], None, host=host)
        async with Client.attach(await world.new_host()) as client:
            expert = RemoteExpert("ffn.0.0", host.address, client)
            assert (await client.host.compute(expert, torch.randn(3, HIDDEN))).shape == (3, HIDDEN)

            await world.crash(host)
            host = await world.restart(host)
            wider = make_backend("ffn.0.0", "ffn", 2 * HIDDEN)
            await start_expert_server(world, [wider], None, host=host)
            out = await client.host.compute(expert, torch.randn(3, 2 * HIDDEN))
            assert out.shape == (3, 2 * HIDDEN)
            with pytest.raises(ValueError, match=r"shape \[3, 8\], expected \[batch, 16\]"):
                await client.host.compute(expert, torch.randn(3, HIDDEN))

    world.run(main)
