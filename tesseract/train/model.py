"""The classifier the trainer builds: a local encoder, a remote mixture of experts, a local head."""

from __future__ import annotations

import torch
from torch import nn

from tesseract.client.moe import RemoteMixtureOfExperts


class MixtureClassifier(nn.Module):
    """features -> Linear + ReLU -> RemoteMixtureOfExperts (hidden -> hidden) -> Linear -> logits."""

    def __init__(self, features: int, classes: int, mixture: RemoteMixtureOfExperts) -> None:
        super().__init__()
        hidden = mixture.in_features
        self.encoder = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.mixture = mixture
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mixture(self.encoder(x)))


class RemoteClassifier(nn.Module):
    """features -> Linear + ReLU (to ``hidden``) -> ``body`` (hidden -> hidden, e.g. a
    ``RemoteSequential``) -> Linear -> logits."""

    def __init__(self, features: int, classes: int, hidden: int, body: nn.Module) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.body = body
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.encoder(x)))
