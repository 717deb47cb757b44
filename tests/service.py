"""A small RPC service the network tests call: echo tensors, add numbers, sleep, fail."""

from __future__ import annotations

import msgspec
import trio

from tesseract.net import RemoteError, Router, WireTensor, deserialize_tensor, serialize_tensor
from tesseract.net.messages import ErrorCode


class Scale(msgspec.Struct, tag="scale"):
    tensor: WireTensor
    factor: float = 2.0


class Tensor(msgspec.Struct, tag="tensor"):
    tensor: WireTensor


class Add(msgspec.Struct, tag="add"):
    a: int
    b: int


class Sum(msgspec.Struct, tag="sum"):
    value: int


class Sleep(msgspec.Struct, tag="sleep"):
    seconds: float


class SlowAdd(msgspec.Struct, tag="slow_add"):
    a: int
    b: int
    seconds: float


class Empty(msgspec.Struct, tag="empty"):
    pass


def make_router() -> Router:
    router = Router()

    async def scale(request: Scale, peer: str) -> Tensor:
        return Tensor(serialize_tensor(deserialize_tensor(request.tensor) * request.factor))

    async def add(request: Add, peer: str) -> Sum:
        await trio.sleep(0)
        return Sum(request.a + request.b)

    async def sleep(request: Sleep, peer: str) -> Empty:
        await trio.sleep(request.seconds)
        return Empty()

    async def slow_add(request: SlowAdd, peer: str) -> Sum:
        await trio.sleep(request.seconds)
        return Sum(request.a + request.b)

    async def fail(request: Empty, peer: str) -> Empty:
        raise ZeroDivisionError("the handler divided by zero")

    async def refuse(request: Empty, peer: str) -> Empty:
        raise RemoteError(ErrorCode.BAD_REQUEST.value, "refused on purpose")

    router.add("scale", Scale, scale)
    router.add("add", Add, add)
    router.add("sleep", Sleep, sleep)
    router.add("slow_add", SlowAdd, slow_add)
    router.add("fail", Empty, fail)
    router.add("refuse", Empty, refuse)
    return router
