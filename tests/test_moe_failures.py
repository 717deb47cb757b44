"""What the mixture layer does when experts misbehave: clear errors, or going on with the others."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import torch
import trio

from tesseract.client import Client, ExpertError, MixtureError, RemoteExpert
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.dht import DHTNode
from tesseract.net import Router, RPCServer, serialize_tensor
from tesseract.net.host import Host
from tesseract.runtime.schema import ExpertSchema, TensorSchema
from tesseract.server import protocol as wire
from tesseract.server.announce import declare_experts
from tests.experts import local_twin, make_backend
from tests.moe_swarm import start_bootstrap, start_expert_server
from tests.worlds import SimWorld, World

HIDDEN = 8
VECTOR = ExpertSchema((TensorSchema((HIDDEN,)),), (TensorSchema((HIDDEN,)),))
Forward = Callable[[torch.Tensor], Awaitable[torch.Tensor]]


async def start_fake_expert(world: World, uid: str, boot: Host, forward: Forward) -> Host:
    """A server that speaks the expert protocol but answers whatever ``forward`` makes up."""
    host = await world.new_host()
    ready = trio.Event()

    async def on_info(request: wire.InfoRequest, peer: str) -> wire.InfoResponse:
        return wire.InfoResponse(uid, VECTOR, 64)

    async def on_forward(request: wire.ForwardRequest, peer: str) -> wire.ForwardResponse:
        from tesseract.net import deserialize_tensor

        return wire.ForwardResponse([serialize_tensor(await forward(deserialize_tensor(request.inputs[0])))])

    async def run() -> None:
        router = Router()
        router.add("expert.info", wire.InfoRequest, on_info)
        router.add("expert.forward", wire.ForwardRequest, on_forward)
        async with (
            DHTNode.start(host, [boot.address], leave_gracefully=False) as dht,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(RPCServer(host, router).serve)
            await declare_experts(dht, [uid], host.address, host.wall_time() + 600)
            ready.set()

    world.start(host, run)
    with trio.fail_after(10):
        await ready.wait()
    return host


def mixture(client: Client, grid=(1, 2), **options) -> RemoteMixtureOfExperts:
    torch.manual_seed(0)
    settings = {"k_best": 2, "forward_timeout": 3.0, "backward_timeout": 3.0, "timeout_after_k_min": 0.5}
    settings.update(options)
    return RemoteMixtureOfExperts(
        in_features=HIDDEN, grid_size=grid, uid_prefix="ffn", client=client, **settings
    )


def run_with_client(world: World, setup, body) -> None:
    """``setup(world, boot)`` starts servers; ``body(client)`` runs synchronous torch code on the client."""

    async def main(world: World) -> None:
        boot = await start_bootstrap(world)
        await setup(world, boot)
        async with Client.attach(await world.new_host(), [boot.address]) as client:
            await client.host.compute(body, client)

    world.run(main)


def one_good_expert(uid: str = "ffn.0.0"):
    async def setup(world: World, boot: Host) -> None:
        await start_expert_server(world, [make_backend(uid, "ffn", HIDDEN)], [boot.address])

    return setup


def test_an_expert_answering_the_wrong_shape_is_named_in_the_error(world: World) -> None:
    async def wrong_shape(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), HIDDEN + 1)

    async def setup(world: World, boot: Host) -> None:
        await start_fake_expert(world, "ffn.0.0", boot, wrong_shape)

    def body(client: Client) -> None:
        moe = mixture(client, grid=(1, 1), k_best=1)
        with pytest.raises(
            MixtureError, match=r"ffn\.0\.0: outputs\[0\] is float32\[3, 9\], expected float32\[3, 8\]"
        ):
            moe(torch.randn(3, HIDDEN))
        with pytest.raises(
            ExpertError,
            match=r"expert ffn\.0\.0 at .*outputs\[0\] is float32\[3, 9\], expected float32\[3, 8\]",
        ):
            RemoteExpert("ffn.0.0", moe.last_routing[0][0].endpoint, client)(torch.randn(3, HIDDEN))

    run_with_client(world, setup, body)


def test_nan_answers_are_refused_and_overflowing_ones_too_with_detect_anomalies(world: World) -> None:
    async def nan_answers(x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))

    async def huge_answers(x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 1e30)  # finite, but its norm (and any loss over it) overflows

    async def setup(world: World, boot: Host) -> None:
        await start_expert_server(world, [make_backend("ffn.0.0", "ffn", HIDDEN)], [boot.address])
        await start_fake_expert(world, "ffn.0.1", boot, nan_answers)
        await start_fake_expert(world, "ffn.0.2", boot, huge_answers)

    def body(client: Client) -> None:
        default = mixture(client, grid=(1, 3), k_best=3, timeout_after_k_min=30.0)  # no stragglers
        out = default(torch.randn(4, HIDDEN))
        assert set(default.last_failures) == {"ffn.0.1"}, default.last_failures
        assert default.last_failures["ffn.0.1"] == "outputs[0] contains NaN or infinite values"
        assert default.stats["forward_bad_answer"] == 1
        assert torch.isfinite(out).all() and out.abs().max() > 1e20  # the huge answer went in
        careful = mixture(client, grid=(1, 3), k_best=3, timeout_after_k_min=30.0, detect_anomalies=True)
        out = careful(torch.randn(4, HIDDEN))
        assert set(careful.last_failures) == {"ffn.0.1", "ffn.0.2"}, careful.last_failures
        assert careful.last_failures["ffn.0.2"] == "answered values whose norm overflows"
        assert out.abs().max() < 100

    run_with_client(world, setup, body)


def test_when_every_expert_is_gone_the_error_says_so_unless_zero_outputs_are_allowed(world: World) -> None:
    async def setup(world: World, boot: Host) -> None:
        host, _ = await start_expert_server(world, [make_backend("ffn.0.0", "ffn", HIDDEN)], [boot.address])
        await world.crash(host)

    def body(client: Client) -> None:
        strict = mixture(client, grid=(1, 1), k_best=1)
        with pytest.raises(
            MixtureError, match=r"4 of 4 samples got fewer than 1 expert answers.*ffn\.0\.0: .*failed"
        ):
            strict(torch.randn(4, HIDDEN))
        assert not client.expert_infos  # a cold start: no expert ever answered, not even its info
        lenient = mixture(client, grid=(1, 1), k_best=1, allow_zero_outputs=True)
        x = torch.randn(4, HIDDEN, requires_grad=True)
        out = lenient(x)
        assert torch.equal(out, torch.zeros(4, HIDDEN))
        out.sum().backward()  # nothing to differentiate through the experts; no error either
        assert torch.equal(x.grad, torch.zeros_like(x))

    run_with_client(world, setup, body)


def test_a_grid_with_no_live_expert_is_a_clear_error(world: World) -> None:
    async def setup(world: World, boot: Host) -> None:
        pass

    def body(client: Client) -> None:
        with pytest.raises(MixtureError, match="no live expert under 'ffn' was found"):
            mixture(client)(torch.randn(2, HIDDEN))

    run_with_client(world, setup, body)


def test_each_expert_gets_one_request_per_batch() -> None:
    world = SimWorld()
    servers = {}

    async def setup(world: World, boot: Host) -> None:
        for row in range(2):
            uids = [f"ffn.{row}.{column}" for column in range(3)]
            _, servers[row] = await start_expert_server(
                world, [make_backend(u, "ffn", HIDDEN) for u in uids], [boot.address]
            )

    def body(client: Client) -> None:
        moe = mixture(client, grid=(2, 3), k_best=4)
        moe(torch.randn(32, HIDDEN)).sum().backward()
        chosen = {expert.uid for experts in moe.last_routing for expert in experts}
        requests = {
            uid: (stats["forward"].requests, stats["backward"].requests)
            for server in servers.values()
            for uid, stats in server.stats().items()
            if stats["forward"].requests
        }
        assert set(requests) == chosen and len(chosen) >= 4
        assert all(counts == (1, 1) for counts in requests.values()), requests

    run_with_client(world, setup, body)


def test_stragglers_are_dropped_after_timeout_after_k_min_and_nothing_waits_past_its_deadline() -> None:
    world = SimWorld()

    async def slow(x: torch.Tensor) -> torch.Tensor:
        await trio.sleep(100)
        return x

    async def setup(world: World, boot: Host) -> None:
        await start_expert_server(world, [make_backend("ffn.0.0", "ffn", HIDDEN)], [boot.address])
        await start_fake_expert(world, "ffn.0.1", boot, slow)

    def body(client: Client) -> None:
        moe = mixture(client, timeout_after_k_min=0.5, forward_timeout=3.0)
        started = client.now()
        out = moe(torch.randn(4, HIDDEN))
        waited = client.now() - started
        assert out.shape == (4, HIDDEN)
        assert 0.5 <= waited < 0.7, waited  # the straggler got 0.5 s more, then was dropped
        assert "straggler" in moe.last_failures["ffn.0.1"]
        # Both slow: nobody reaches k_min, and the whole call ends at forward_timeout.
        both_slow = mixture(client, grid=(1, 2), k_min=2, forward_timeout=2.0, timeout_after_k_min=0.1)
        started = client.now()
        with pytest.raises(MixtureError, match=r"ffn\.0\.1: .*2s"):
            both_slow(torch.randn(4, HIDDEN))
        assert 2.0 <= client.now() - started < 2.2

    run_with_client(world, setup, body)


def test_backward_failures_leave_out_only_that_experts_gradient(world: World) -> None:
    backends = [make_backend(f"ffn.0.{i}", "ffn", HIDDEN, seed=i) for i in range(2)]
    twins = [local_twin(backend) for backend in backends]  # the servers' copies take optimizer steps

    async def setup(world: World, boot: Host) -> None:
        await start_expert_server(world, backends[:1], [boot.address])
        await start_expert_server(
            world, backends[1:], [boot.address], fault_rate=1.0, faulty_kinds=("backward",)
        )

    def body(client: Client) -> None:
        moe = mixture(client)
        x = torch.randn(5, HIDDEN, requires_grad=True)
        moe(x).sum().backward()
        assert moe.stats["backward_failures"] == 1 and "injected fault" in moe.last_failures["ffn.0.1"]
        # Reference: the same mixture with the failed expert's output cut off from x's gradient.
        reference_x = x.detach().clone().requires_grad_(True)
        logits = moe.proj(reference_x).split(moe.grid_size, dim=-1)
        scores = torch.stack([logits[0][:, 0] + logits[1][:, i] for i in range(2)], dim=1)
        weights = torch.softmax(scores, dim=1)
        good = twins[0].module(reference_x)
        cut = twins[1].module(reference_x).detach()
        (weights[:, :1] * good + weights[:, 1:] * cut).sum().backward()
        torch.testing.assert_close(x.grad, reference_x.grad, atol=1e-5, rtol=0)

    run_with_client(world, setup, body)
