"""Expert RPC messages: ``expert.info``, ``expert.forward``, ``expert.backward``."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from tesseract.net.tensors import WireTensor
from tesseract.runtime.schema import ExpertSchema


class ServerErrorCode(enum.StrEnum):
    """The wire codes an expert server adds to the RPC layer's own (``tesseract.net.ErrorCode``)."""

    NOT_FOUND = "not_found"  # no such expert on this server
    UNAVAILABLE = "unavailable"  # shutting down, or an injected fault: try another server


Uid = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Tensors = Annotated[list[WireTensor], msgspec.Meta(max_length=32)]


class InfoRequest(msgspec.Struct, tag="expert.info", array_like=True):
    uid: Uid


class InfoResponse(msgspec.Struct, tag="expert.about", array_like=True):
    uid: str
    schema: ExpertSchema
    max_batch_size: int


class ForwardRequest(msgspec.Struct, tag="expert.forward", array_like=True):
    uid: Uid
    inputs: Tensors


class ForwardResponse(msgspec.Struct, tag="expert.outputs", array_like=True):
    outputs: Tensors


class BackwardRequest(msgspec.Struct, tag="expert.backward", array_like=True):
    uid: Uid
    inputs: Tensors
    grad_outputs: Tensors


class BackwardResponse(msgspec.Struct, tag="expert.grads", array_like=True):
    grad_inputs: Tensors
