"""``RemoteSwitchMixtureOfExperts``: top-1 routing (Switch Transformer style) over the swarm's grid.

Each sample goes to its single best live expert (``k_best=1`` by default); the output is that
expert's output times the gate's probability of it, so the gate learns through the output. During
training the gate sees its input times multiplicative noise in ``[1 - jitter, 1 + jitter]``, which
keeps routing from freezing early. ``forward`` (and ``forward_async``) also return a load-balancing
loss over the grid: for each dimension, ``size * sum_c (share of samples sent to coordinate c) *
(mean gate probability of c)``, averaged over the dimensions. It is 1 when the load is even and
grows as it concentrates; add a small multiple of it to the training loss.

Only the gating rule is this layer's own; routing, calls, masking and mixing are the parent's path.
"""

from __future__ import annotations

from typing import Any

import torch

from tesseract.client import mixing
from tesseract.client.mixing import Dispatch
from tesseract.client.moe import RemoteMixtureOfExperts


class RemoteSwitchMixtureOfExperts(RemoteMixtureOfExperts):
    def __init__(self, *, k_best: int = 1, jitter: float = 0.01, **options: Any) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be within [0, 1), got {jitter}")
        super().__init__(k_best=k_best, **options)
        self.jitter = jitter

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """The mixture's output and its load-balancing loss."""
        return self._forward(x)

    async def forward_async(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """The same as ``forward`` without autograd, for trio code."""
        return await self._forward_async(x)

    def gate_scores(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per dimension, the gate's log-probability of every coordinate (of a jittered input in training)."""
        gate_input = flat
        if self.training and self.jitter:
            gate_input = flat * torch.empty_like(flat).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        return [part.log_softmax(dim=-1) for part in super().gate_scores(gate_input)]

    def gate_weights(
        self, scores: list[torch.Tensor], coordinates: torch.Tensor, alive: torch.Tensor
    ) -> torch.Tensor:
        """The gate's probability of each chosen expert that answered."""
        return mixing.probability_weights(scores, coordinates, alive)

    def result(
        self, mixed: torch.Tensor, scores: list[torch.Tensor], dispatch: Dispatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mixed, self.balancing_loss(scores, dispatch.coordinates, dispatch.alive)

    def balancing_loss(
        self, log_probs: list[torch.Tensor], coordinates: torch.Tensor, alive: torch.Tensor
    ) -> torch.Tensor:
        """Grid utilisation times mean gate probability, per dimension (see the module docstring)."""
        routed = alive[:, 0]  # each sample's top choice, where it answered
        count = max(1, int(routed.sum()))
        losses = []
        for dimension, (size, part) in enumerate(zip(self.grid_size, log_probs, strict=True)):
            share = torch.bincount(coordinates[routed, 0, dimension], minlength=size).to(part.dtype) / count
            losses.append(size * (share * part.exp().mean(dim=0)).sum())
        return torch.stack(losses).mean()
