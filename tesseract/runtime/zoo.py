"""Experts that ship with Tesseract, and how a user's own module is named: ``package.module:Class``.

Every factory takes ``hidden_dim`` (and optional keyword arguments) and returns the module with its
schema. A user class is built as ``Class(hidden_dim=..., **kwargs)``; its schema is its
``input_schema``/``output_schema`` attributes if it has them, else one ``[hidden_dim]`` float32 tensor
in and out. A module may say what one sample costs (``flops_per_sample()``); the simulator charges
virtual time from it (2 flops per parameter otherwise).

The Learning@home paper's blocks: ``paper-ffn`` (hidden -> 4 hidden -> 4 hidden -> hidden; the paper
uses hidden 1024) and ``paper-transformer`` (a Transformer layer with 16 heads over 512 tokens).
``make_modelled_expert`` stands in for any of them without its arithmetic (``ModelledExpert``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tesseract.runtime.schema import ExpertSchema, TensorSchema


class FeedForward(nn.Module):
    """hidden -> width (4*hidden unless given) -> hidden with GELU, then residual and LayerNorm."""

    def __init__(self, hidden_dim: int, width: int | None = None) -> None:
        super().__init__()
        width = 4 * hidden_dim if width is None else width
        self.up = nn.Linear(hidden_dim, width)
        self.down = nn.Linear(width, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.down(nn.functional.gelu(self.up(x))))


class DeepFeedForward(nn.Module):
    """hidden -> 4*hidden -> 4*hidden -> hidden with ReLU: the block of the Learning@home paper's
    throughput experiment (hidden 1024)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        inner = 4 * hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(hidden_dim, inner),
            nn.ReLU(),
            nn.Linear(inner, inner),
            nn.ReLU(),
            nn.Linear(inner, hidden_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


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

    def flops_per_sample(self) -> float:
        """Every weight once per token (2 flops each), and attention's two (tokens x tokens x hidden)
        products."""
        weights = sum(p.numel() for p in self.parameters() if p.dim() > 1)
        hidden = self.block.self_attn.embed_dim
        return 2.0 * weights * self.seq_len + 4.0 * self.seq_len**2 * hidden


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


class ModelledExpert(nn.Module):
    """Stands in for a block without its arithmetic: outputs of the block's shapes (its inputs times
    one parameter, so gradients flow and the optimizer runs), and the block's cost, which the
    simulator charges as virtual time. The tensors that travel keep their real sizes."""

    def __init__(self, name: str, parameters: int, flops: float) -> None:
        super().__init__()
        self.name = name
        self.scale = nn.Parameter(torch.ones(()))
        #: The real block's parameter count (what an optimizer step would touch) and cost per sample.
        self.modelled_parameters = parameters
        self._flops = flops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def flops_per_sample(self) -> float:
        return self._flops

    def extra_repr(self) -> str:
        return f"{self.name}, {self.modelled_parameters:,} parameters, {self._flops:.3g} flops/sample"


def flops_per_sample(module: nn.Module) -> float:
    """What one sample costs ``module`` forward: its own figure, or 2 flops per parameter."""
    own = getattr(module, "flops_per_sample", None)
    if callable(own):
        return float(own())
    return 2.0 * sum(p.numel() for p in module.parameters())


def _transformer_paper(hidden_dim: int, **kwargs: Any) -> tuple[nn.Module, ExpertSchema]:
    kwargs.setdefault("num_heads", 16)
    kwargs.setdefault("seq_len", 512)
    return _transformer(hidden_dim, **kwargs)


ZOO: dict[str, Callable[..., tuple[nn.Module, ExpertSchema]]] = {
    "ffn": lambda hidden_dim, **kwargs: (FeedForward(hidden_dim, **kwargs), _vector_schema(hidden_dim)),
    "transformer": _transformer,
    "nop": lambda hidden_dim, **kwargs: (Nop(hidden_dim, **kwargs), _vector_schema(hidden_dim)),
    "paper-ffn": lambda hidden_dim, **kwargs: (
        DeepFeedForward(hidden_dim, **kwargs),
        _vector_schema(hidden_dim),
    ),
    "paper-transformer": _transformer_paper,
}


def make_modelled_expert(expert_cls: str, hidden_dim: int, **kwargs: Any) -> tuple[nn.Module, ExpertSchema]:
    """A ``ModelledExpert`` with the schema, parameter count and cost of ``make_expert``'s block,
    which is built on torch's meta device (shapes only, no memory) to measure them. Blocks whose
    inputs and outputs differ in shape cannot be modelled this way (ValueError)."""
    with torch.device("meta"):
        block, schema = make_expert(expert_cls, hidden_dim, **kwargs)
    if schema.inputs != schema.outputs or len(schema.inputs) != 1:
        raise ValueError(f"{expert_cls}: only a block with one input shaped like its output can be modelled")
    parameters = sum(p.numel() for p in block.parameters())
    return ModelledExpert(expert_cls, parameters, flops_per_sample(block)), schema


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
