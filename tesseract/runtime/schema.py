"""What an expert takes and returns, and the checks every incoming batch passes before torch runs it.

Shapes exclude the batch dimension. A batch is rejected, with a message naming the tensor and the
problem, for the wrong number of tensors, a wrong dtype or trailing shape, disagreeing batch sizes,
an empty or over-limit batch, or NaN/inf values.
"""

from __future__ import annotations

import msgspec
import numpy as np
import torch

from tesseract.net.tensors import DTYPE_NAMES, DTYPES
from tesseract.runtime.errors import InvalidBatch


class TensorSchema(msgspec.Struct, array_like=True, frozen=True):
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random batch of this shape (for tests, benchmarks and cost estimates)."""
        shape = (batch_size, *self.shape)
        if self.torch_dtype.is_floating_point:
            return torch.randn(shape, generator=generator).to(self.torch_dtype)
        return torch.randint(0, 2, shape, generator=generator).to(self.torch_dtype)

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSchema:
        """The schema of one sample of a batched tensor."""
        return cls(tuple(tensor.shape[1:]), DTYPE_NAMES[tensor.dtype])


class ExpertSchema(msgspec.Struct, array_like=True, frozen=True):
    inputs: tuple[TensorSchema, ...]
    outputs: tuple[TensorSchema, ...]


#: dtypes whose finiteness numpy checks on a zero-copy view: ~10x faster than torch on CPU here
#: (7.5 us against 78 us for 64x1024 float32, 2.3 us against 6.9 us for 8 values).
_NUMPY_FLOATS = {torch.float16, torch.float32, torch.float64}


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN and no infinity in a floating-point tensor (other dtypes are always finite)."""
    if not tensor.dtype.is_floating_point:
        return True
    if tensor.device.type == "cpu" and tensor.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor).all())


def check_batch(
    tensors: list[torch.Tensor], schemas: tuple[TensorSchema, ...], *, what: str, max_batch_size: int
) -> int:
    """Validate a batch against its schema; return the batch size or raise ``InvalidBatch``."""
    if len(tensors) != len(schemas):
        raise InvalidBatch(f"{what}: expected {len(schemas)} tensors, got {len(tensors)}")
    batch_size: int | None = None
    for index, (tensor, schema) in enumerate(zip(tensors, schemas, strict=True)):
        if tensor.dtype != schema.torch_dtype:
            raise InvalidBatch(f"{what}[{index}]: dtype {DTYPE_NAMES[tensor.dtype]}, expected {schema.dtype}")
        if tensor.dim() != len(schema.shape) + 1 or tuple(tensor.shape[1:]) != schema.shape:
            expected = ", ".join(["batch", *map(str, schema.shape)])
            raise InvalidBatch(f"{what}[{index}]: shape {list(tensor.shape)}, expected [{expected}]")
        if batch_size is None:
            batch_size = tensor.shape[0]
        elif tensor.shape[0] != batch_size:
            raise InvalidBatch(f"{what}[{index}]: batch size {tensor.shape[0]} differs from {batch_size}")
        if not all_finite(tensor):
            raise InvalidBatch(f"{what}[{index}]: contains NaN or infinite values")
    assert batch_size is not None
    if batch_size == 0:
        raise InvalidBatch(f"{what}: empty batch")
    if batch_size > max_batch_size:
        raise InvalidBatch(
            f"{what}: batch of {batch_size} exceeds this expert's max_batch_size {max_batch_size}"
        )
    return batch_size
