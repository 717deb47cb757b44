"""``RemoteExpert``: a torch module whose forward and backward run on an expert server.

Autograd works through it: forward sends the inputs; backward sends the same inputs back with the
gradients of the outputs, and the server returns the gradients of the inputs (and trains the expert
on them). Inputs are checked against the expert's schema before anything is sent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tesseract.client import calls
from tesseract.client.session import Client
from tesseract.expert_uid import parse_uid
from tesseract.runtime.errors import InvalidBatch
from tesseract.runtime.schema import ExpertSchema, check_batch
from tesseract.server import protocol as wire

DEFAULT_TIMEOUT = 30.0
#: Makes autograd call backward (so the expert trains) even when no input needs a gradient.
DUMMY = torch.empty(0, requires_grad=True)


class RemoteExpert(nn.Module):
    """``RemoteExpert("ffn.0.3", "10.0.0.7:31337", client)(x)``: a call to one expert on one server."""

    def __init__(self, uid: str, endpoint: str, client: Client, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        parse_uid(uid)
        self.uid = uid
        self.endpoint = endpoint
        self.client = client
        self.timeout = timeout

    @property
    def info(self) -> wire.InfoResponse:
        """The server's description of this expert (schema, batch limit), cached by the client."""
        return self.client.run(calls.expert_info, self.client, self.uid, self.endpoint, self.timeout)

    @property
    def schema(self) -> ExpertSchema:
        return self.info.schema

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self.check_inputs(list(inputs))
        outputs = _RemoteCall.apply(self, DUMMY, *inputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def check_inputs(self, inputs: list[torch.Tensor]) -> None:
        """Raise ``ValueError`` naming the problem if ``inputs`` do not fit the expert's schema."""
        try:
            self._check_against(self.info, inputs)
        except ValueError:
            # The cached schema may be that of a server since restarted with another: ask it again.
            calls.forget_info(self.client, self.uid, self.endpoint)
            self._check_against(self.info, inputs)

    def _check_against(self, info: wire.InfoResponse, inputs: list[torch.Tensor]) -> None:
        try:
            check_batch(
                [t.detach() for t in inputs],
                info.schema.inputs,
                what=f"{self.uid} inputs",
                max_batch_size=info.max_batch_size,
            )
        except InvalidBatch as exc:
            raise ValueError(str(exc)) from None

    async def forward_async(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Forward without autograd, for trio code: ``await expert.forward_async(x)``."""
        return await calls.expert_forward(self.client, self.uid, self.endpoint, list(inputs), self.timeout)

    async def backward_async(
        self, inputs: list[torch.Tensor], grad_outputs: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The input gradients for ``grad_outputs`` (and one training step on the server)."""
        return await calls.expert_backward(
            self.client, self.uid, self.endpoint, inputs, grad_outputs, self.timeout
        )

    def extra_repr(self) -> str:
        return f"uid={self.uid!r}, endpoint={self.endpoint!r}"


class _RemoteCall(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, expert: RemoteExpert, dummy: torch.Tensor, *inputs: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        ctx.expert = expert
        ctx.save_for_backward(*inputs)
        detached = [t.detach() for t in inputs]
        return tuple(expert.client.run(expert.forward_async, *detached))

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        expert: RemoteExpert = ctx.expert
        inputs = list(ctx.saved_tensors)
        grads = [g.contiguous() for g in grad_outputs]
        grad_inputs = expert.client.run(expert.backward_async, inputs, grads)
        needs = ctx.needs_input_grad[2:]
        return (None, None, *(g if need else None for g, need in zip(grad_inputs, needs, strict=True)))
