"""One expert call over the network: schema lookup, forward, backward, with every answer checked.

These coroutines are what ``RemoteExpert`` and the mixture layers run on the client's loop. A reply
is untrusted like any network message: its tensor count, dtypes and shapes must match the expert's
schema and the batch that was sent, or the call fails with an ``ExpertError`` saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import torch

from tesseract.client.errors import ExpertError
from tesseract.net.errors import CallTimeout, NetError, RemoteError
from tesseract.net.tensors import DTYPES, MAX_RANK, deserialize_tensor, serialize_tensor
from tesseract.runtime.schema import TensorSchema
from tesseract.server import protocol as wire

if TYPE_CHECKING:
    from tesseract.client.session import Client


async def expert_info(client: Client, uid: str, endpoint: str, timeout: float) -> wire.InfoResponse:
    """The expert's schema and batch limit, fetched once per (uid, endpoint) and cached."""
    key = (uid, endpoint)
    info = client.expert_infos.get(key)
    if info is None:
        request = wire.InfoRequest(uid)
        info = await _call(client, uid, endpoint, "expert.info", request, wire.InfoResponse, timeout)
        _check_schema(uid, endpoint, info)
        client.expert_infos[key] = info
    return info


async def expert_forward(
    client: Client, uid: str, endpoint: str, inputs: list[torch.Tensor], timeout: float
) -> list[torch.Tensor]:
    info = await expert_info(client, uid, endpoint, timeout)
    request = wire.ForwardRequest(uid, [serialize_tensor(t) for t in inputs])
    reply = await _call(client, uid, endpoint, "expert.forward", request, wire.ForwardResponse, timeout)
    return _checked(uid, endpoint, "outputs", reply.outputs, info.schema.outputs, len(inputs[0]))


async def expert_backward(
    client: Client,
    uid: str,
    endpoint: str,
    inputs: list[torch.Tensor],
    grad_outputs: list[torch.Tensor],
    timeout: float,
) -> list[torch.Tensor]:
    info = await expert_info(client, uid, endpoint, timeout)
    request = wire.BackwardRequest(
        uid, [serialize_tensor(t) for t in inputs], [serialize_tensor(g) for g in grad_outputs]
    )
    reply = await _call(client, uid, endpoint, "expert.backward", request, wire.BackwardResponse, timeout)
    return _checked(uid, endpoint, "input gradients", reply.grad_inputs, info.schema.inputs, len(inputs[0]))


async def _call(client: Client, uid: str, endpoint: str, method: str, request, response_type, timeout: float):
    try:
        return await client.rpc.call(endpoint, method, request, response_type, timeout=timeout)
    except CallTimeout:
        client.stats["timeouts"] += 1
        raise ExpertError(
            uid, endpoint, f"{method} timed out after {timeout:.3g}s", ExpertError.TIMEOUT
        ) from None
    except RemoteError as exc:
        client.stats["refused"] += 1
        raise ExpertError(
            uid, endpoint, f"{method} failed: {exc.code}: {exc.message}", ExpertError.REFUSED
        ) from None
    except NetError as exc:
        client.stats["unreachable"] += 1
        raise ExpertError(uid, endpoint, f"{method} failed: {exc}", ExpertError.UNREACHABLE) from None


def _check_schema(uid: str, endpoint: str, info: wire.InfoResponse) -> None:
    if info.uid != uid:
        raise ExpertError(uid, endpoint, f"answered for another expert, {info.uid!r}", ExpertError.BAD_ANSWER)
    for schema in (*info.schema.inputs, *info.schema.outputs):
        if schema.dtype not in DTYPES or len(schema.shape) > MAX_RANK or any(d < 0 for d in schema.shape):
            raise ExpertError(
                uid, endpoint, f"announced an unusable schema: {schema}", ExpertError.BAD_ANSWER
            )
    if not info.schema.inputs or not info.schema.outputs:
        raise ExpertError(
            uid, endpoint, "announced a schema without inputs or outputs", ExpertError.BAD_ANSWER
        )


def _checked(
    uid: str, endpoint: str, what: str, tensors: list, schemas: tuple[TensorSchema, ...], rows: int
) -> list[torch.Tensor]:
    if len(tensors) != len(schemas):
        raise ExpertError(
            uid,
            endpoint,
            f"sent {len(tensors)} {what}, its schema has {len(schemas)}",
            ExpertError.BAD_ANSWER,
        )
    result = []
    for index, (message, schema) in enumerate(zip(tensors, schemas, strict=True)):
        try:
            tensor = deserialize_tensor(message)
        except (ValueError, msgspec.MsgspecError) as exc:
            raise ExpertError(
                uid, endpoint, f"{what}[{index}] is malformed: {exc}", ExpertError.BAD_ANSWER
            ) from None
        expected = (rows, *schema.shape)
        if tensor.dtype != schema.torch_dtype or tuple(tensor.shape) != expected:
            raise ExpertError(
                uid,
                endpoint,
                f"{what}[{index}] is {message.dtype}{list(tensor.shape)}, "
                f"expected {schema.dtype}{list(expected)}",
                ExpertError.BAD_ANSWER,
            )
        result.append(tensor)
    return result
