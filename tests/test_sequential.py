"""RemoteSequential: a chain of remote blocks equals the same blocks run locally, in both worlds; a
crashed block's server is replaced by a replica; what cannot work fails naming the block."""

from __future__ import annotations

import pytest
import torch

from tesseract.client import Client, RemoteSequential, SequenceError
from tests.experts import local_twin, make_backend
from tests.moe_swarm import start_bootstrap, start_expert_server
from tests.worlds import World

HIDDEN = 8
UIDS = [f"block.{i}" for i in range(4)]


def blocks(seed: int = 0) -> dict:
    return {uid: make_backend(uid, "ffn", HIDDEN, seed=seed + i) for i, uid in enumerate(UIDS)}


def local_chain(twins: dict, x: torch.Tensor) -> torch.Tensor:
    for uid in UIDS:
        x = twins[uid].module(x)
    return x


def test_outputs_and_gradients_equal_the_blocks_run_locally(world: World) -> None:
    backends = blocks()
    twins = {uid: local_twin(backend) for uid, backend in backends.items()}

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        # Two blocks per server: the chain crosses from one server to the other and back never.
        await start_expert_server(world, [backends[u] for u in UIDS[:2]], [boot.address])
        await start_expert_server(world, [backends[u] for u in UIDS[2:]], [boot.address])
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            chain = RemoteSequential(UIDS, client, forward_timeout=5, backward_timeout=5)
            torch.manual_seed(3)
            x = torch.randn(5, HIDDEN, requires_grad=True)
            target = torch.randn(5, HIDDEN)

            def evaluate() -> torch.Tensor:  # no gradient wanted: the chain keeps no block's inputs
                with torch.no_grad():
                    return chain(x)

            evaluated = await client.host.compute(evaluate)  # before any backward trains the blocks
            assert not evaluated.requires_grad

            def step() -> torch.Tensor:
                out = chain(x)
                (out * target).sum().backward()
                return out.detach()

            out = await client.host.compute(step)
            torch.testing.assert_close(evaluated, out, atol=1e-6, rtol=0)
            grad = x.grad.clone()
            x.grad = None
            expected = local_chain(twins, x)
            (expected * target).sum().backward()
            torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=0)
            torch.testing.assert_close(grad, x.grad, atol=1e-5, rtol=0)

            assert chain.stats["failed_calls"] == 0

    world.run(main)


def test_a_crashed_server_is_replaced_by_a_replica_and_without_one_the_block_is_named(world: World) -> None:
    backends = blocks()
    replicas = {uid: local_twin(backend) for uid, backend in backends.items()}  # same weights
    twins = {uid: local_twin(backend) for uid, backend in backends.items()}

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        first, _ = await start_expert_server(world, list(backends.values()), [boot.address])
        second, _ = await start_expert_server(world, list(replicas.values()), [boot.address])
        hosts = {first.address: first, second.address: second}
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            chain = RemoteSequential(UIDS, client, forward_timeout=2, backward_timeout=2)
            x = torch.randn(3, HIDDEN, requires_grad=True)
            await client.host.compute(chain, x)  # forward only: no expert trains
            serving = chain._replicas["block.0"][0]
            assert set(chain._replicas["block.0"]) == set(hosts)

            await world.crash(hosts.pop(serving))

            def step() -> torch.Tensor:
                out = chain(x)
                out.sum().backward()  # on the replica: the crashed server is not asked again
                return out

            out = await client.host.compute(step)
            assert chain.stats["failed_calls"] >= 1
            torch.testing.assert_close(out.detach(), local_chain(twins, x).detach(), atol=1e-5, rtol=0)

            await world.crash(hosts.popitem()[1])
            with pytest.raises(SequenceError) as info:
                await client.host.compute(chain, x)
            assert info.value.uid == "block.0"
            assert "every replica failed" in str(info.value)

            unknown = RemoteSequential(["block.77"], client, forward_timeout=2)
            with pytest.raises(SequenceError, match=r"block\.77: no server hosts it"):
                await client.host.compute(unknown, x)

    world.run(main)


def test_blocks_that_do_not_fit_are_named_before_any_tensor_is_sent(world: World) -> None:
    narrow = make_backend("block.0", "ffn", HIDDEN, seed=1)
    wide = make_backend("block.1", "ffn", 2 * HIDDEN, seed=2)

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        _, server = await start_expert_server(world, [narrow, wide], [boot.address])
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            chain = RemoteSequential(["block.0", "block.1"], client, forward_timeout=2)
            with pytest.raises(ValueError, match=r"blocks block\.0 and block\.1 do not fit"):
                await client.host.compute(chain, torch.randn(2, HIDDEN))
            with pytest.raises(ValueError, match=r"block\.0 inputs"):
                await client.host.compute(RemoteSequential(["block.0"], client), torch.randn(2, 3))
            assert all(stats.requests == 0 for stats in server.runtime.stats.values())

    world.run(main)
