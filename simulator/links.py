"""What one link between two simulated hosts is like: latency, bandwidth and loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.distributions import Distribution, as_distribution


@dataclass
class LinkProfile:
    """What one link between two hosts is like."""

    latency: Distribution = field(default_factory=lambda: as_distribution(0.01))
    #: Bytes per second; None for unlimited.
    bandwidth: float | None = None
    #: Probability that a datagram is lost (or a stream segment needs a retransmission).
    loss: float = 0.0

    def __post_init__(self) -> None:
        self.latency = as_distribution(self.latency)
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be in [0, 1], got {self.loss}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")
