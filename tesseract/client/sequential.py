"""``RemoteSequential``: a deep model split across servers, its blocks called one after another.

``RemoteSequential(["block.0", ..., "block.223"], client)(x)`` runs ``x`` through each block on a
server that hosts it, in order, and backward through them in reverse, so autograd sees one module.
This is the naive model-parallel pipeline of the Learning@home paper (its throughput baseline) and
Petals' user-facing idea: each block may live on another volunteer's machine.

Where a block lives comes from the DHT: every server hosting a uid keeps its own entry under it
(``tesseract.client.discovery.get_replicas``). A call that fails goes to the next replica of the same
uid; when none is left the replicas are read from the DHT once more, and if that brings none that
works, the chain fails with a ``SequenceError`` naming the uid. Backward goes to the replica that ran
the block's forward first (it computes the same gradients either way; only the replica that answers
trains). Before any tensor is sent, each block's schema is read and the chain checked: block i's
outputs must be block i+1's inputs, or a ``ValueError`` names the two blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import trio
from torch import nn

from tesseract.client import calls
from tesseract.client.discovery import get_replicas
from tesseract.client.errors import ExpertError, SequenceError
from tesseract.client.expert import DUMMY
from tesseract.client.session import Client
from tesseract.expert_uid import parse_uid
from tesseract.runtime.errors import InvalidBatch
from tesseract.runtime.schema import ExpertSchema, check_batch
from tesseract.server import protocol as wire

#: Replicas read from the DHT are used this long before they are read again; a failed call reads them
#: again at once. Each read looks up every block of the chain: at 30 s, a slow chain (a step of minutes
#: over 200 ms links) re-read its 224 blocks several times a step.
REPLICAS_TTL = 300.0


class RemoteSequential(nn.Module):
    """Blocks ``uids`` in order, each on a server that hosts it; one autograd function over the chain.

    ``forward_timeout`` and ``backward_timeout`` bound each block's call (per replica tried).
    """

    def __init__(
        self,
        uids: Sequence[str],
        client: Client,
        *,
        forward_timeout: float = 30.0,
        backward_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        if not uids:
            raise ValueError("a RemoteSequential needs at least one block uid")
        for uid in uids:
            parse_uid(uid)
        self.uids = list(uids)
        self.client = client
        self.forward_timeout = forward_timeout
        self.backward_timeout = backward_timeout
        self._replicas: dict[str, list[str]] = {}
        self._replicas_read_at = float("-inf")
        self._checked: list[wire.InfoResponse] | None = None
        #: Block calls that failed (the next replica was tried, if any), and reads of the DHT.
        self.stats: dict[str, int] = {"failed_calls": 0, "replica_reads": 0}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        schemas = self.client.run(self.check_chain)
        try:
            check_batch(
                [t.detach() for t in inputs],
                schemas[0].schema.inputs,
                what=f"{self.uids[0]} inputs",
                max_batch_size=min(info.max_batch_size for info in schemas),
            )
        except InvalidBatch as exc:
            raise ValueError(str(exc)) from None
        if torch.is_grad_enabled():
            outputs = _ChainCall.apply(self, DUMMY, *inputs)
        else:  # no backward will come: keep no block's inputs (224 of them in the paper's chain)
            forward_only = functools.partial(self.forward_async, keep=False)
            outputs, _ = self.client.run(forward_only, [t.detach() for t in inputs])
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # ----- on the client's loop ------------------------------------------------------------------

    async def check_chain(self) -> list[wire.InfoResponse]:
        """Each block's description; ValueError naming two adjacent blocks whose shapes disagree."""
        if self._checked is not None:
            return self._checked
        infos: list[Any] = [None] * len(self.uids)
        failures: list[SequenceError] = []

        async def describe(index: int, uid: str) -> None:
            try:
                infos[index], _ = await self._on_some_replica(uid, lambda e: self._info(uid, e))
            except SequenceError as error:
                failures.append(error)

        await self._replicas_of(self.uids[0], fresh=False)  # one DHT read for all, not one each
        async with trio.open_nursery() as nursery:  # all at once: one round trip, not one per block
            for index, uid in enumerate(self.uids):
                nursery.start_soon(describe, index, uid)
        if failures:
            raise min(failures, key=lambda error: self.uids.index(error.uid))  # the first in the chain
        for index in range(len(self.uids) - 1):
            (left, a), (right, b) = (self.uids[index], infos[index]), (self.uids[index + 1], infos[index + 1])
            if a.schema.outputs != b.schema.inputs:
                raise ValueError(
                    f"blocks {left} and {right} do not fit: {left} outputs {_tensors(a.schema, 'outputs')}, "
                    f"{right} takes {_tensors(b.schema, 'inputs')}"
                )
        self._checked = infos
        return infos

    async def forward_async(
        self, inputs: list[torch.Tensor], *, keep: bool = True
    ) -> tuple[list[torch.Tensor], list[Any]]:
        """The chain's outputs, and for each block (its inputs, the endpoint that ran it): what
        ``backward_async`` needs; an empty list with ``keep=False``."""
        saved = []
        for uid, info in zip(self.uids, await self.check_chain(), strict=True):

            async def call(
                endpoint: str, uid: str = uid, tensors: list = inputs, schema: ExpertSchema = info.schema
            ) -> list[torch.Tensor]:
                return await calls.expert_forward(
                    self.client, uid, endpoint, tensors, self.forward_timeout, expected=schema
                )

            outputs, endpoint = await self._on_some_replica(uid, call)
            if keep:
                saved.append((inputs, endpoint))
            inputs = outputs
        return inputs, saved

    async def backward_async(self, saved: list[Any], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The gradients of the chain's inputs, each block's backward on the replica that ran it."""
        for uid, info, (inputs, endpoint) in reversed(
            list(zip(self.uids, await self.check_chain(), saved, strict=True))
        ):

            async def call(
                at: str,
                uid: str = uid,
                inputs: list = inputs,
                grads: list = grads,
                schema: ExpertSchema = info.schema,
            ) -> list[torch.Tensor]:
                return await calls.expert_backward(
                    self.client, uid, at, inputs, grads, self.backward_timeout, expected=schema
                )

            grads, _ = await self._on_some_replica(uid, call, first=endpoint)
        return grads

    async def _info(self, uid: str, endpoint: str) -> wire.InfoResponse:
        return await calls.expert_info(self.client, uid, endpoint, self.forward_timeout)

    async def _on_some_replica(self, uid: str, attempt, *, first: str | None = None) -> tuple[Any, str]:
        """``attempt(endpoint)`` on the replicas of ``uid`` until one succeeds: (its result, endpoint)."""
        tried: set[str] = set()
        errors: list[str] = []
        for fresh in (False, True):
            endpoints = await self._replicas_of(uid, fresh=fresh)
            if first is not None and first not in tried:
                endpoints = [first, *(e for e in endpoints if e != first)]
            for endpoint in endpoints:
                if endpoint in tried:
                    continue
                tried.add(endpoint)
                try:
                    return await attempt(endpoint), endpoint
                except ExpertError as error:
                    errors.append(f"{endpoint}: {error.reason}")
                    self.stats["failed_calls"] += 1
        if not errors:
            raise SequenceError(uid, "no server hosts it (nothing in the DHT under this uid)")
        raise SequenceError(uid, f"every replica failed ({'; '.join(errors)})")

    async def _replicas_of(self, uid: str, *, fresh: bool) -> list[str]:
        now = trio.current_time()
        if fresh or now - self._replicas_read_at > REPLICAS_TTL or uid not in self._replicas:
            dht = self.client.require_dht()
            self._replicas = await get_replicas(dht, self.uids)
            self._replicas_read_at = now
            self.stats["replica_reads"] += 1
        return self._replicas.get(uid, [])

    def extra_repr(self) -> str:
        return f"{len(self.uids)} blocks: {self.uids[0]} ... {self.uids[-1]}"


def _tensors(schema: ExpertSchema, side: str) -> str:
    return ", ".join(f"{s.dtype}{list(s.shape)}" for s in getattr(schema, side))


class _ChainCall(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, chain: RemoteSequential, dummy: torch.Tensor, *inputs: torch.Tensor):
        ctx.chain = chain
        outputs, ctx.saved = chain.client.run(chain.forward_async, [t.detach() for t in inputs])
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor):
        chain: RemoteSequential = ctx.chain
        grads = [g.contiguous() for g in grad_outputs]
        grad_inputs = chain.client.run(chain.backward_async, ctx.saved, grads)
        needs = ctx.needs_input_grad[2:]
        return (None, None, *(g if need else None for g, need in zip(grad_inputs, needs, strict=True)))


__all__ = ["RemoteSequential", "SequenceError"]
