"""How a node treats peers, without I/O: whom not to call for a while, and how fast a peer may store.

Time is always passed in (``now``: any monotonic clock, the caller's ``trio.current_time()``), so
both are tested directly, without a network or a clock.
"""

from __future__ import annotations

import math


class Blacklist:
    """Addresses that failed to answer, skipped until their backoff ends.

    Each failure doubles the address's backoff (``base`` to ``maximum``); an answer clears it.
    """

    def __init__(self, base: float = 1.0, maximum: float = 60.0) -> None:
        self.base = base
        self.maximum = maximum
        self._entries: dict[str, tuple[float, float]] = {}  # address -> (blocked until, backoff)

    def blocked(self, address: str, now: float) -> bool:
        entry = self._entries.get(address)
        return entry is not None and entry[0] > now

    def failed(self, address: str, now: float) -> float:
        """Record a failure; return the backoff now in force."""
        previous = self._entries.get(address)
        backoff = self.base if previous is None else min(previous[1] * 2, self.maximum)
        self._entries[address] = (now + backoff, backoff)
        return backoff

    def answered(self, address: str) -> None:
        self._entries.pop(address, None)

    def forget_expired(self, now: float) -> None:
        """Drop entries whose backoff has ended (the next failure starts again from ``base``)."""
        self._entries = {a: entry for a, entry in self._entries.items() if entry[0] > now}

    def __len__(self) -> int:
        return len(self._entries)


class StoreRateLimiter:
    """A token bucket per address: ``rate`` store items per second, bursts up to ``burst``.

    At most ``max_peers`` buckets are kept. A bucket that has refilled to ``burst`` says nothing that
    a new bucket would not, so those are dropped to make room; no other bucket is ever dropped, as
    that would hand its peer (perhaps a flooder that drained it) a fresh burst. If every bucket still
    holds information, addresses without one share a single overflow bucket until some refill.
    """

    def __init__(self, rate: float, burst: float, max_peers: int = 10_000) -> None:
        if not (rate > 0 and burst >= 1 and max_peers >= 1):
            raise ValueError(f"bad token bucket: rate {rate}, burst {burst}, max_peers {max_peers}")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at time)
        self._overflow: tuple[float, float] | None = None
        self._swept_at = -math.inf

    def take(self, address: str, wanted: int, now: float) -> int:
        """How many of ``wanted`` items this address may store now; those are spent."""
        key = self._bucket_for(address, now)
        tokens = self._tokens(key, now)
        granted = max(0, min(wanted, int(tokens)))
        self._set(key, tokens - granted, now)
        return granted

    def retry_after(self, address: str, wanted: int, now: float) -> float:
        """Seconds until ``wanted`` items (at most a burst) would be granted to this address."""
        key = address if address in self._buckets else None
        missing = min(wanted, self.burst) - self._tokens(key, now)
        return max(0.0, missing / self.rate)

    def forget_refilled(self, now: float) -> None:
        """Drop the buckets that are full again: they carry no information."""
        self._buckets = {
            address: (tokens, at)
            for address, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate < self.burst
        }
        self._swept_at = now

    def __len__(self) -> int:
        return len(self._buckets)

    # ----- internals ---------------------------------------------------------------------------

    def _bucket_for(self, address: str, now: float) -> str | None:
        """The address's own bucket, a new one, or None: the shared overflow bucket."""
        if address in self._buckets:
            return address
        if len(self._buckets) >= self.max_peers and now - self._swept_at >= self.burst / self.rate / 4:
            # A drained bucket refills within burst / rate: sweeping more often than a fraction of
            # that finds little, and a sweep costs a pass over the table.
            self.forget_refilled(now)
        if len(self._buckets) < self.max_peers:
            self._buckets[address] = (self.burst, now)
            return address
        return None

    def _tokens(self, key: str | None, now: float) -> float:
        entry = self._buckets.get(key) if key is not None else self._overflow
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def _set(self, key: str | None, tokens: float, now: float) -> None:
        if key is None:
            self._overflow = (tokens, now)
        else:
            self._buckets[key] = (tokens, now)
