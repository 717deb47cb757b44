"""A DHT node's settings."""

from __future__ import annotations

from dataclasses import dataclass

from tesseract.dht.protocol import MAX_VALUE_BYTES


@dataclass(frozen=True)
class DHTConfig:
    k: int = 20
    alpha: int = 3
    #: Each record is stored on this many of the nodes closest to its key.
    num_replicas: int = 8
    #: Budget of one request (its one retry included).
    request_timeout: float = 1.0
    retries: int = 1
    #: Budget of a whole get; a store gets it plus the time its items take at ``store_rate``.
    operation_timeout: float = 10.0
    max_clock_skew: float = 5.0
    #: Records may not expire further than this in the future.
    max_ttl: float = 7 * 24 * 3600.0
    refresh_interval: float = 600.0
    republish_interval: float = 300.0
    #: Store items accepted per second from one address (token bucket), and the burst allowed: an
    #: honest publisher may renew 8,192 records in one go, every 10 s (docs/architecture.md says
    #: who). A sender told "flood" waits ``retry_after`` and sends those items again.
    store_rate: float = 1_000.0
    store_burst: float = 10_000.0
    #: Addresses with a store bucket of their own (``policy.StoreRateLimiter``).
    max_store_peers: int = 10_000
    blacklist_base: float = 1.0
    blacklist_max: float = 60.0
    max_records: int = 100_000
    max_record_bytes: int = 256 * 1024 * 1024
    max_value_size: int = 4_096
    cache_found_values: bool = True
    #: A node that only asks: it serves no requests, holds no records, and tells every peer so (an
    #: empty sender id), so it never enters a routing table. For trainers, which come and go.
    client_mode: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.max_value_size <= MAX_VALUE_BYTES:
            raise ValueError(f"max_value_size must be within (0, {MAX_VALUE_BYTES}] (one wire value)")
