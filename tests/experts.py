"""Helpers for the expert server tests: start a server in a world, call it like a client would."""

from __future__ import annotations

import copy

import torch

from tesseract.net import RPCClient, deserialize_tensor, serialize_tensor
from tesseract.runtime import ExpertBackend, make_expert
from tesseract.runtime.schema import TensorSchema
from tesseract.server import ExpertServer
from tesseract.server import protocol as wire
from tests.worlds import World


def make_backend(
    uid: str, expert_cls: str = "ffn", hidden_dim: int = 16, seed: int = 0, **options
) -> ExpertBackend:
    torch.manual_seed(seed)
    module, schema = make_expert(expert_cls, hidden_dim, **options.pop("expert_kwargs", {}))
    return ExpertBackend(uid, module, schema, **options)


def local_twin(backend: ExpertBackend) -> ExpertBackend:
    """An identical backend (same weights, same optimizer settings) to compute the expected results."""
    return ExpertBackend(
        backend.uid, copy.deepcopy(backend.module), backend.schema, max_batch_size=backend.max_batch_size
    )


async def start_server(world: World, backends: list[ExpertBackend], **options) -> ExpertServer:
    """An expert server (no DHT) on a new host of ``world``."""
    from tests.moe_swarm import start_expert_server

    _, server = await start_expert_server(world, backends, None, **options)
    return server


async def forward(
    client: RPCClient, address: str, uid: str, inputs: list[torch.Tensor], timeout: float = 30
) -> list[torch.Tensor]:
    request = wire.ForwardRequest(uid, [serialize_tensor(t) for t in inputs])
    reply = await client.call(address, "expert.forward", request, wire.ForwardResponse, timeout=timeout)
    return [deserialize_tensor(t) for t in reply.outputs]


async def backward(
    client: RPCClient,
    address: str,
    uid: str,
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
    timeout: float = 30,
) -> list[torch.Tensor]:
    request = wire.BackwardRequest(
        uid, [serialize_tensor(t) for t in inputs], [serialize_tensor(g) for g in grads]
    )
    reply = await client.call(address, "expert.backward", request, wire.BackwardResponse, timeout=timeout)
    return [deserialize_tensor(t) for t in reply.grad_inputs]


def same_weights(a: ExpertBackend, b: ExpertBackend, atol: float = 1e-5) -> bool:
    return all(
        torch.allclose(x, y, atol=atol)
        for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True)
    )


# ----- hostile and misfit experts, served by a real ExpertServer as 'tests.experts:Class' ---------


class NaNOutputs(torch.nn.Module):
    """Answers every forward with NaN (a broken or hostile expert)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("nan")


class _PoisonGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("nan"))


class NaNGradients(torch.nn.Module):
    """Honest outputs, finite weight gradients (its own steps go on), NaN input gradients."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(_PoisonGradient.apply(x))


class Widen(torch.nn.Module):
    """Honest, but fits no mixture of width ``hidden_dim``: ``[hidden]`` in, ``[hidden + 1]`` out."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_dim, hidden_dim + 1)
        self.input_schema = (TensorSchema((hidden_dim,)),)
        self.output_schema = (TensorSchema((hidden_dim + 1,)),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
