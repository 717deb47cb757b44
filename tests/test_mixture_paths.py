"""The switch's ``forward`` and ``forward_async`` compute one model: same output, same balancing loss
(the top-k mixture's twin check is in ``test_moe.py``)."""

from __future__ import annotations

import torch

from tesseract.client import RemoteSwitchMixtureOfExperts
from tests.test_moe import GRID, HIDDEN, client_of_one_server, grid_backends
from tests.worlds import World


def test_the_switch_gives_trio_code_the_same_output_and_balancing_loss(world: World) -> None:
    backends, _ = grid_backends()

    async def main(world: World) -> None:
        async with client_of_one_server(world, backends) as client:
            torch.manual_seed(3)
            switch = RemoteSwitchMixtureOfExperts(
                in_features=HIDDEN, grid_size=GRID, uid_prefix="ffn", client=client
            ).eval()  # no jitter: both paths see the gate's own scores
            x = torch.randn(16, HIDDEN)
            out, balance = await client.host.compute(switch, x)
            routing = switch.last_routing
            async_result = await switch.forward_async(x)
            assert isinstance(async_result, tuple) and len(async_result) == 2, type(async_result)
            async_out, async_balance = async_result
            assert switch.last_routing == routing
            assert len({e.uid for experts in routing for e in experts}) > 1  # the gate's weights matter
            torch.testing.assert_close(async_out, out.detach(), atol=1e-6, rtol=0)
            torch.testing.assert_close(async_balance, balance.detach(), atol=1e-6, rtol=0)

    world.run(main)
