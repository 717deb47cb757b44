"""Random distributions for link latency and session lengths, drawn from a caller's seeded RNG."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


class Distribution:
    def sample(self, rng: random.Random) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Distribution):
    value: float

    def sample(self, rng: random.Random) -> float:
        return self.value


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Exponential(Distribution):
    mean: float

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class LogNormal(Distribution):
    """Long-tailed latency: ``median`` seconds, spread ``sigma`` (0.5 is a typical WAN tail)."""

    median: float
    sigma: float

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


@dataclass(frozen=True)
class Weibull(Distribution):
    scale: float
    shape: float

    def sample(self, rng: random.Random) -> float:
        return rng.weibullvariate(self.scale, self.shape)


@dataclass(frozen=True)
class Pareto(Distribution):
    scale: float
    alpha: float

    def sample(self, rng: random.Random) -> float:
        return self.scale * rng.paretovariate(self.alpha)


@dataclass(frozen=True)
class ShiftedPareto(Distribution):
    """Pareto shifted to start at 0 (Lomax), given by its ``mean`` and tail index ``alpha`` > 1:
    OverSim's heavy-tailed session lengths. Smaller ``alpha``: a heavier tail."""

    mean: float
    alpha: float

    def sample(self, rng: random.Random) -> float:
        scale = self.mean * (self.alpha - 1)
        return scale * (rng.paretovariate(self.alpha) - 1)


@dataclass(frozen=True)
class Jittered(Distribution):
    """``base`` plus a uniform extra delay in [0, ``jitter``]."""

    base: Distribution
    jitter: float

    def sample(self, rng: random.Random) -> float:
        return self.base.sample(rng) + rng.uniform(0.0, self.jitter)


def weibull_with_mean(mean: float, shape: float) -> Weibull:
    """The Weibull distribution of this ``mean`` and ``shape`` (scale = mean / Γ(1 + 1/shape))."""
    return Weibull(mean / math.gamma(1 + 1 / shape), shape)


def as_distribution(value: float | Distribution) -> Distribution:
    return value if isinstance(value, Distribution) else Fixed(float(value))
