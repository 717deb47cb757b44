"""Experts that ship with Tesseract, and how a user's own module is named: ``package.module:Class``.

Every factory takes ``hidden_dim`` (and optional keyword arguments) and returns the module with its
schema. A user class is built as ``Class(hidden_dim=..., **kwargs)``; its schema is its
``input_schema``/``output_schema`` attributes if it has them, else one ``[hidden_dim]`` float32 tensor
in and out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tesseract.runtime.schema import ExpertSchema, TensorSchema


class FeedForward(nn.Module):
    """hidden -> 4*hidden -> hidden with GELU, then residual and LayerNorm."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_dim, 4 * hidden_dim)
        self.down = nn.Linear(4 * hidden_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.down(nn.functional.gelu(self.up(x))))


class TransformerBlock(nn.Module):
    """One pre-norm transformer encoder block over a sequence of ``seq_len`` vectors."""

    def __init__(self, hidden_dim: int, num_heads: int = 8, seq_len: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.block = nn.TransformerEncoderLayer(
            hidden_dim,
            num_heads,
            dim_feedforward=4 * hidden_dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Nop(nn.Module):
    """Returns its input: measures everything but the compute. One parameter, so the optimizer runs."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _vector_schema(hidden_dim: int) -> ExpertSchema:
    vector = TensorSchema((hidden_dim,))
    return ExpertSchema((vector,), (vector,))


def _transformer(hidden_dim: int, **kwargs: Any) -> tuple[nn.Module, ExpertSchema]:
    module = TransformerBlock(hidden_dim, **kwargs)
    sequence = TensorSchema((module.seq_len, hidden_dim))
    return module, ExpertSchema((sequence,), (sequence,))


ZOO: dict[str, Callable[..., tuple[nn.Module, ExpertSchema]]] = {
    "ffn": lambda hidden_dim, **kwargs: (FeedForward(hidden_dim, **kwargs), _vector_schema(hidden_dim)),
    "transformer": _transformer,
    "nop": lambda hidden_dim, **kwargs: (Nop(hidden_dim, **kwargs), _vector_schema(hidden_dim)),
}


def make_expert(expert_cls: str, hidden_dim: int, **kwargs: Any) -> tuple[nn.Module, ExpertSchema]:
    """Build a zoo expert by name, or a user's ``package.module:Class``."""
    if expert_cls in ZOO:
        return ZOO[expert_cls](hidden_dim, **kwargs)
    if ":" not in expert_cls:
        raise ValueError(
            f"unknown expert class {expert_cls!r}: use one of {', '.join(ZOO)} or 'package.module:Class'"
        )
    module_name, _, class_name = expert_cls.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load expert class {expert_cls!r}: {exc}") from None
    module = cls(hidden_dim=hidden_dim, **kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(f"{expert_cls} built a {type(module).__name__}, not a torch.nn.Module")
    inputs = getattr(module, "input_schema", None)
    outputs = getattr(module, "output_schema", None)
    if inputs is None or outputs is None:
        return module, _vector_schema(hidden_dim)
    return module, ExpertSchema(tuple(inputs), tuple(outputs))
