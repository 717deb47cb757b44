"""Compute modelled at scale: a stand-in for the paper's blocks that skips their arithmetic but keeps
their shapes and their cost, charged as virtual time on a named device."""

from __future__ import annotations

import time

import torch
import trio

from simulator.scenario.devices import PRESETS
from tesseract.net import RPCClient
from tesseract.runtime import ExpertBackend
from tesseract.runtime.zoo import DeepFeedForward, TransformerBlock, make_expert, make_modelled_expert
from tests.experts import forward
from tests.moe_swarm import start_expert_server
from tests.worlds import SimWorld


def test_a_modelled_block_has_the_real_blocks_schema_parameters_and_cost() -> None:
    module, schema = make_modelled_expert("paper-ffn", 1024)
    real = DeepFeedForward(1024)
    assert module.modelled_parameters == sum(p.numel() for p in real.parameters()) == 25_175_040
    assert module.flops_per_sample() == 2 * 25_175_040
    assert schema == make_expert("paper-ffn", 1024)[1]
    x = torch.randn(3, 1024, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and module.scale.grad is not None

    module, schema = make_modelled_expert("paper-transformer", 1024)
    assert [tuple(s.shape) for s in schema.inputs] == [(512, 1024)]
    with torch.device("meta"):
        block = TransformerBlock(1024, num_heads=16, seq_len=512)
    weights = sum(p.numel() for p in block.parameters() if p.dim() > 1)
    assert module.flops_per_sample() == 2 * weights * 512 + 4 * 512**2 * 1024


def test_a_modelled_expert_costs_the_same_virtual_time_as_the_real_one_without_its_arithmetic() -> None:
    rows = 64
    profile = PRESETS["gtx1080"]
    timings: dict[str, tuple[float, float, tuple]] = {}

    async def main(world: SimWorld) -> None:
        for name, build in (("real", make_expert), ("modelled", make_modelled_expert)):
            host = await world.new_host()
            host.profile = profile
            module, schema = build("paper-ffn", 1024)
            await start_expert_server(world, [ExpertBackend("ffn.0", module, schema)], None, host=host)
            async with RPCClient(await world.new_host()) as client:
                x = torch.randn(rows, 1024)
                await forward(client, host.address, "ffn.0", [x])  # schema, connection
                started, wall = trio.current_time(), time.perf_counter()
                (out,) = await forward(client, host.address, "ffn.0", [x])
                timings[name] = (trio.current_time() - started, time.perf_counter() - wall, out.shape)

    SimWorld(latency=0.0).run(main)
    expected = profile.cost(2 * 25_175_040 * rows)
    for name in ("real", "modelled"):
        virtual, _, shape = timings[name]
        assert shape == (rows, 1024), name
        assert expected <= virtual < expected + 0.002, (name, virtual, expected)
    assert timings["modelled"][1] < timings["real"][1]
