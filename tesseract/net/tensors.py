"""Tensors on the wire: dtype name, shape, raw little-endian bytes.

Decoding is zero-copy (``torch.frombuffer`` over the receive buffer) and validates everything first:
a known dtype, non-negative dims, a bounded rank and extent, and a byte length equal to dtype size x
element count.
"""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec
import torch

from tesseract.net.errors import TensorError

MAX_RANK = 16
#: The most elements a wire tensor's shape may span (zero dims left out); the same bound as one dim.
MAX_ELEMENTS = 2**40
Dim = Annotated[int, msgspec.Meta(ge=0, lt=MAX_ELEMENTS)]

#: Every dtype that may cross the network, by wire name.
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}

_BIG_ENDIAN = sys.byteorder == "big"


class WireTensor(msgspec.Struct, array_like=True):
    dtype: str
    shape: Annotated[tuple[Dim, ...], msgspec.Meta(max_length=MAX_RANK)]
    #: Raw bytes; decoded as a view of the message buffer, never copied.
    data: memoryview


def serialize_tensor(tensor: torch.Tensor) -> WireTensor:
    """Describe a tensor for the wire. Non-contiguous, 0-d, empty and GPU tensors are all accepted."""
    name = DTYPE_NAMES.get(tensor.dtype)
    if name is None:
        raise TensorError(f"dtype {tensor.dtype} cannot be sent; supported: {', '.join(DTYPES)}")
    if not _BIG_ENDIAN:
        # The common case, a contiguous CPU tensor of a dtype numpy knows: a third of the general
        # path's cost. Anything else (GPU, strided, empty, bfloat16, conjugate) makes numpy or
        # memoryview refuse, and takes the general path.
        try:
            return WireTensor(name, tuple(tensor.shape), memoryview(tensor.detach().numpy()).cast("B"))
        except (TypeError, RuntimeError):
            pass
    flat = tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
    if _BIG_ENDIAN and flat.element_size() > 1:  # pragma: no cover - no big-endian CI machine
        flat = flat.view(torch.uint8).reshape(-1, flat.element_size()).flip(1).reshape(-1)
    raw = flat.view(torch.uint8).numpy()
    return WireTensor(name, tuple(tensor.shape), memoryview(raw))


def deserialize_tensor(message: WireTensor) -> torch.Tensor:
    """Check a wire tensor and return a tensor viewing its bytes (writable if the buffer is)."""
    dtype = DTYPES.get(message.dtype)
    if dtype is None:
        raise TensorError(f"unknown dtype {message.dtype!r}; supported: {', '.join(DTYPES)}")
    # The dims other than zeros still set the strides torch computes, even for an empty tensor: bound
    # their product as a tensor's size is bounded, or [0, 2**39, 2**39] overflows torch's arithmetic.
    extent = 1
    for dim in message.shape:
        extent *= max(dim, 1)
    if extent > MAX_ELEMENTS:
        raise TensorError(f"tensor shape {list(message.shape)} spans more than {MAX_ELEMENTS} elements")
    numel = extent if all(message.shape) else 0
    itemsize = dtype.itemsize
    expected = numel * itemsize
    if len(message.data) != expected:
        raise TensorError(
            f"tensor {message.dtype}{list(message.shape)} needs {expected} bytes, got {len(message.data)}"
        )
    if numel == 0:
        return torch.empty(message.shape, dtype=dtype)
    data = message.data
    if data.readonly:
        # torch cannot guard a read-only buffer; copy rather than hand out a tensor that lies.
        data = memoryview(bytearray(data))
    flat = torch.frombuffer(data, dtype=dtype)
    if _BIG_ENDIAN and itemsize > 1:  # pragma: no cover
        flat = flat.view(torch.uint8).reshape(-1, itemsize).flip(1).reshape(-1).view(dtype)
    return flat.reshape(message.shape)
