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


@dataclass
class AccessLink:
    """One host's own link to the network, and the faults on it: its upload and download capacity
    (bytes/s, None: unlimited), latency and loss added to every message it sends or receives, and
    a clog (FoundationDB's: its messages held until then)."""

    up: float | None = None
    down: float | None = None
    extra_latency: Distribution | None = None
    extra_loss: float = 0.0
    clogged_until: float = 0.0
    up_free_at: float = 0.0
    down_free_at: float = 0.0
