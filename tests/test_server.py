"""The expert server over real loopback and in the simulator: numerics, batching, bad input."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import torch
import trio

from tesseract.net import RemoteError, RPCClient, serialize_tensor
from tesseract.net.framing import FrameReader
from tesseract.net.messages import ErrorReply, Request, encode_frame, split_body
from tesseract.server import protocol as wire
from tests.experts import backward, forward, local_twin, make_backend, same_weights, start_server
from tests.worlds import World

ZOO_CASES = [
    ("ffn", 16, {}),
    ("transformer", 16, {"num_heads": 2, "seq_len": 4}),
    ("nop", 8, {}),
]


@pytest.mark.parametrize(("expert_cls", "hidden", "kwargs"), ZOO_CASES, ids=[c[0] for c in ZOO_CASES])
def test_remote_forward_and_backward_equal_local(
    world: World, expert_cls: str, hidden: int, kwargs: dict
) -> None:
    backend = make_backend(f"{expert_cls}.0", expert_cls, hidden, expert_kwargs=kwargs)
    reference = local_twin(backend)

    async def main(world: World) -> None:
        server = await start_server(world, [backend])
        async with RPCClient(await world.new_host()) as client:
            generator = torch.Generator().manual_seed(1)
            for step in range(3):
                inputs = [schema.sample(5, generator) for schema in backend.schema.inputs]
                grads = [schema.sample(5, generator) for schema in backend.schema.outputs]
                outputs = await forward(client, server.address, backend.uid, inputs)
                expected = reference.forward(inputs)
                assert all(torch.allclose(o, e, atol=1e-5) for o, e in zip(outputs, expected, strict=True)), (
                    step
                )
                grad_inputs = await backward(client, server.address, backend.uid, inputs, grads)
                expected_grads = reference.backward(inputs, grads)
                assert all(
                    torch.allclose(g, e, atol=1e-5) for g, e in zip(grad_inputs, expected_grads, strict=True)
                )
                await server.runtime.settle()  # the step lands after the reply
                assert same_weights(backend, reference), f"weights diverged after step {step}"
        assert backend.steps == 3

    world.run(main)


def test_many_clients_get_their_own_rows_and_steps_replay_exactly(world: World) -> None:
    """Clients send different row counts, so the batch log says which request went into which batch;
    replaying those batches on a local twin must give the server's weights."""
    backend = make_backend("ffn.0", "ffn", 16)
    reference = local_twin(backend)

    async def main(world: World) -> None:
        server = await start_server(world, [backend])
        batches: list[tuple[str, str, list[int]]] = []
        server.runtime.on_batch = lambda uid, kind, rows: batches.append((uid, kind, rows))
        data = {}
        for rows in range(1, 7):
            generator = torch.Generator().manual_seed(rows)
            data[rows] = (
                torch.randn(rows, 16, generator=generator),
                torch.randn(rows, 16, generator=generator),
            )
        expected_outputs = {rows: reference.forward([x]) for rows, (x, _) in data.items()}
        results: dict[int, torch.Tensor] = {}

        async def client_forward(rows: int, client: RPCClient) -> None:
            (results[rows],) = await forward(client, server.address, backend.uid, [data[rows][0]])

        async def client_backward(rows: int, client: RPCClient) -> None:
            await backward(client, server.address, backend.uid, [data[rows][0]], [data[rows][1]])

        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(RPCClient(await world.new_host())) for _ in range(6)]
            # Every forward before any backward: a backward's optimizer step changes what later
            # forwards compute, and the expected outputs here are those of the initial weights.
            for phase in (client_forward, client_backward):
                async with trio.open_nursery() as nursery:
                    for rows, client in enumerate(clients, start=1):
                        nursery.start_soon(phase, rows, client)
        for rows, output in results.items():
            assert output.shape == (rows, 16)
            assert torch.allclose(output, expected_outputs[rows][0], atol=1e-5)  # its own rows, unmixed
        backward_batches = [rows for uid, kind, rows in batches if kind == "backward"]
        assert sorted(r for batch in backward_batches for r in batch) == [1, 2, 3, 4, 5, 6]
        for batch in backward_batches:
            reference.backward(
                [torch.cat([data[r][0] for r in batch])], [torch.cat([data[r][1] for r in batch])]
            )
        await server.runtime.settle()
        assert same_weights(backend, reference)
        if world.name == "sim":  # deterministic there: concurrent requests do share batches
            assert len(backward_batches) < 6

    world.run(main)


def test_bad_requests_get_typed_errors_and_leave_the_weights_alone(world: World) -> None:
    backend = make_backend("ffn.0", "ffn", 16, max_batch_size=8)
    before = {k: v.clone() for k, v in backend.module.state_dict().items()}

    async def main(world: World) -> None:
        server = await start_server(world, [backend])
        address, uid = server.address, backend.uid
        good = torch.randn(2, 16)
        cases = [
            ("forward", "ffn.9", [good], None, "not_found", "no expert"),
            ("forward", uid, [good, good], None, "bad_request", "expected 1 tensors"),
            ("forward", uid, [good.double()], None, "bad_request", "dtype float64"),
            ("forward", uid, [torch.randn(2, 15)], None, "bad_request", "shape [2, 15]"),
            ("forward", uid, [torch.randn(2, 4, 16)], None, "bad_request", "shape [2, 4, 16]"),
            (
                "forward",
                uid,
                [torch.randn(9, 16)],
                None,
                "bad_request",
                "exceeds this expert's max_batch_size 8",
            ),
            ("forward", uid, [torch.full((2, 16), float("nan"))], None, "bad_request", "NaN"),
            (
                "backward",
                uid,
                [good],
                [torch.full((2, 16), float("inf"))],
                "bad_request",
                "grad_outputs[0]: contains NaN",
            ),
            ("backward", uid, [good], [torch.randn(3, 16)], "bad_request", "rows"),
            ("backward", uid, [good], [], "bad_request", "expected 1 tensors"),
        ]
        async with RPCClient(await world.new_host()) as client:
            for kind, target, inputs, grads, code, text in cases:
                with pytest.raises(RemoteError) as info:
                    if kind == "forward":
                        await forward(client, address, target, inputs)
                    else:
                        await backward(client, address, target, inputs, grads)
                assert info.value.code == code and text in info.value.message, (kind, text, info.value)
            # A deadline already past, straight from the wire.
            stream = await client.host.transport.open_stream(address)
            request = wire.ForwardRequest(uid, [serialize_tensor(good)])
            await stream.send_all(
                encode_frame(Request(1, "expert.forward", -1.0), request, max_frame_size=1 << 20)
            )
            frame = await FrameReader(stream).receive_frame()
            reply, _ = split_body(memoryview(frame.body), frame.envelope_size)
            assert isinstance(reply, ErrorReply) and reply.code == "deadline_exceeded"
            await stream.aclose()
            # Finite inputs whose gradients overflow: the step is skipped, weights untouched.
            huge = torch.full((2, 16), 3e38)
            await backward(client, address, uid, [good], [huge])
            await server.runtime.settle()
            assert backend.skipped_steps == 1 and backend.steps == 0
            assert all(torch.equal(before[k], v) for k, v in backend.module.state_dict().items())
            # And every other request is still served.
            (output,) = await forward(client, address, uid, [good])
            assert output.shape == (2, 16)
        assert server.errors["bad_request"] >= 9 and server.errors["not_found"] == 1

    world.run(main)


def test_a_deferred_step_lands_before_anything_reads_the_expert(tmp_path) -> None:
    """The runtime answers a backward before its optimizer step; the expert's next forward, next
    backward and checkpoint must all see the stepped weights, exactly as if it had stepped at once."""
    backend = make_backend("ffn.0", "ffn", 16)
    twin = local_twin(backend)
    generator = torch.Generator().manual_seed(3)
    x, g = torch.randn(4, 16, generator=generator), torch.randn(4, 16, generator=generator)
    assert all(
        torch.equal(a, b)
        for a, b in zip(backend.compute_gradients([x], [g]), twin.backward([x], [g]), strict=True)
    )
    assert backend.step_pending and backend.steps == 0
    assert torch.equal(backend.forward([x])[0], twin.forward([x])[0])  # stepped first
    assert not backend.step_pending and backend.steps == 1

    backend.compute_gradients([x], [g])
    backend.compute_gradients([x], [g])  # the first one's step lands before the second's gradients
    twin.backward([x], [g])
    twin.backward([x], [g])
    backend.save(tmp_path)  # the second one's step lands before the checkpoint
    assert backend.steps == 3 and same_weights(backend, twin, atol=0)
    restored = make_backend("ffn.0", "ffn", 16, seed=5)
    assert restored.load(tmp_path) and restored.steps == 3 and same_weights(restored, twin, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_expert_serves_what_the_same_expert_computes_on_cpu(world: World) -> None:
    """Inputs reach the GPU through the side copy stream; answers and learning match the CPU."""
    backend = make_backend("ffn.0", "ffn", 64, device="cuda")
    reference = make_backend("ffn.0", "ffn", 64)  # the same seed: the same initial weights

    async def main(world: World) -> None:
        server = await start_server(world, [backend])
        async with RPCClient(await world.new_host()) as client:
            generator = torch.Generator().manual_seed(2)
            for _ in range(3):
                x, g = torch.randn(32, 64, generator=generator), torch.randn(32, 64, generator=generator)
                (output,) = await forward(client, server.address, backend.uid, [x])
                assert output.device.type == "cpu"
                assert torch.allclose(output, reference.forward([x])[0], atol=1e-4)
                (grad,) = await backward(client, server.address, backend.uid, [x], [g])
                assert torch.allclose(grad, reference.backward([x], [g])[0], atol=1e-4)
            await server.runtime.settle()
        assert backend.steps == 3
        served, expected = backend.module.state_dict(), reference.module.state_dict()
        assert all(torch.allclose(served[name].cpu(), expected[name], atol=1e-4) for name in expected)

    world.run(main)
