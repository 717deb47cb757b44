"""One expert call over the network: schema lookup, forward, backward, with every answer checked.

These coroutines are what ``RemoteExpert`` and the mixture layers run on the client's loop. A reply
is untrusted like any network message: its tensor count, dtypes and shapes must match the expert's
schema and the batch that was sent, and every value must be finite, or the call fails with an
``ExpertError`` (``bad_answer``) saying so. A caller that needs a particular schema (a mixture layer)
passes it as ``expected``: an expert announcing another one fails the same way, before any tensor is
sent.

Schemas are cached per (uid, endpoint) in ``client.expert_infos``. A failure that casts doubt on the
cached schema drops it, so the next call asks the expert again: a bad answer, a ``bad_request``
refusal (the expert read our tensors against another schema) or a lost connection (the server may
come back as another process, with other experts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import torch

from tesseract.client.errors import ExpertError
from tesseract.net.errors import CallTimeout, NetError, RemoteError
from tesseract.net.messages import ErrorCode
from tesseract.net.tensors import DTYPES, MAX_RANK, deserialize_tensor, serialize_tensor
from tesseract.runtime.schema import ExpertSchema, TensorSchema, all_finite
from tesseract.server import protocol as wire

if TYPE_CHECKING:
    from tesseract.client.session import Client


async def expert_info(client: Client, uid: str, endpoint: str, timeout: float) -> wire.InfoResponse:
    """The expert's schema and batch limit, cached per (uid, endpoint) until a call casts doubt on it."""
    key = (uid, endpoint)
    info = client.expert_infos.get(key)
    if info is None:
        request = wire.InfoRequest(uid)
        info = await _call(client, uid, endpoint, "expert.info", request, wire.InfoResponse, timeout)
        _check_schema(uid, endpoint, info)
        client.expert_infos[key] = info
    return info


def forget_info(client: Client, uid: str, endpoint: str) -> None:
    """Drop the cached schema of (uid, endpoint): the next call fetches it again."""
    client.expert_infos.pop((uid, endpoint), None)


async def expert_forward(
    client: Client,
    uid: str,
    endpoint: str,
    inputs: list[torch.Tensor],
    timeout: float,
    *,
    expected: ExpertSchema | None = None,
) -> list[torch.Tensor]:
    """The expert's outputs for ``inputs``; ``expected``: the schema the caller can use, if it matters."""
    try:
        info = await expert_info(client, uid, endpoint, timeout)
        _check_fits(uid, endpoint, info.schema, expected)
        request = wire.ForwardRequest(uid, [serialize_tensor(t) for t in inputs])
        reply = await _call(client, uid, endpoint, "expert.forward", request, wire.ForwardResponse, timeout)
        return _checked(uid, endpoint, "outputs", reply.outputs, info.schema.outputs, len(inputs[0]))
    except ExpertError as error:
        _forget_if_doubtful(client, error)
        raise


async def expert_backward(
    client: Client,
    uid: str,
    endpoint: str,
    inputs: list[torch.Tensor],
    grad_outputs: list[torch.Tensor],
    timeout: float,
    *,
    expected: ExpertSchema | None = None,
) -> list[torch.Tensor]:
    """The gradients of ``inputs`` for ``grad_outputs`` (and one training step on the server)."""
    try:
        info = await expert_info(client, uid, endpoint, timeout)
        _check_fits(uid, endpoint, info.schema, expected)
        request = wire.BackwardRequest(
            uid, [serialize_tensor(t) for t in inputs], [serialize_tensor(g) for g in grad_outputs]
        )
        reply = await _call(client, uid, endpoint, "expert.backward", request, wire.BackwardResponse, timeout)
        return _checked(
            uid, endpoint, "input gradients", reply.grad_inputs, info.schema.inputs, len(inputs[0])
        )
    except ExpertError as error:
        _forget_if_doubtful(client, error)
        raise


def _forget_if_doubtful(client: Client, error: ExpertError) -> None:
    if error.kind in (ExpertError.BAD_ANSWER, ExpertError.UNREACHABLE) or error.code == ErrorCode.BAD_REQUEST:
        forget_info(client, error.uid, error.endpoint)


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
            uid, endpoint, f"{method} failed: {exc.code}: {exc.message}", ExpertError.REFUSED, exc.code
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


def _check_fits(uid: str, endpoint: str, schema: ExpertSchema, expected: ExpertSchema | None) -> None:
    if expected is not None and schema != expected:
        raise ExpertError(
            uid,
            endpoint,
            f"announced {_describe(schema)}, the caller needs {_describe(expected)}",
            ExpertError.BAD_ANSWER,
        )


def _describe(schema: ExpertSchema) -> str:
    def tensors(schemas: tuple[TensorSchema, ...]) -> str:
        return ", ".join(f"{s.dtype}[rows, {', '.join(map(str, s.shape))}]" for s in schemas)

    return f"({tensors(schema.inputs)}) -> ({tensors(schema.outputs)})"


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
        # One NaN in a reply would reach the trainer's weights through its optimizer.
        if not all_finite(tensor):
            raise ExpertError(
                uid, endpoint, f"{what}[{index}] contains NaN or infinite values", ExpertError.BAD_ANSWER
            )
        result.append(tensor)
    return result
