"""The run's trace: every delivery, drop and fault as one fixed-size record, folded into a digest.

Two runs with equal digests sent the same messages between the same hosts at the same virtual times;
that is how tests and benchmarks show that a run is deterministic. A record is (virtual time in ns,
kind, source host, destination host, size): the network records a message when it is sent (so a
message still in flight counts), a drop when the link or a partition loses it, and every fault.
"""

from __future__ import annotations

import hashlib
import struct

RECORD = struct.Struct("<qBiiI")

# Record kinds.
KIND_STREAM, KIND_DATAGRAM, KIND_CONNECT, KIND_FAULT, KIND_DROP = range(5)

_BLOCK = 64 * 1024  # bytes of records hashed at once

#: A record as kept in ``Trace.events``: (virtual time in s, kind, source, destination, size).
Event = tuple[float, int, int, int, int]


class Trace:
    """A blake2b digest of records, and optionally the records themselves (for debugging a run)."""

    __slots__ = ("_hasher", "_unhashed", "events")

    def __init__(self, *, keep_events: bool = False) -> None:
        self._hasher = hashlib.blake2b(digest_size=16)
        # Records are hashed in blocks: one update per record costs a call per message, and a digest
        # of the concatenation is the same digest.
        self._unhashed = bytearray()
        self.events: list[Event] | None = [] if keep_events else None

    def record(self, now: float, kind: int, src: int, dst: int, size: int) -> None:
        unhashed = self._unhashed
        unhashed += RECORD.pack(round(now * 1e9), kind, src, dst, size & 0xFFFFFFFF)
        if len(unhashed) >= _BLOCK:
            self._flush()
        if self.events is not None:
            self.events.append((now, kind, src, dst, size))

    def label(self, what: str) -> None:
        """Fold in a fault's name: faults set up before the run starts have no time to record."""
        self._unhashed += what.encode()

    def hexdigest(self) -> str:
        self._flush()
        return self._hasher.hexdigest()

    def _flush(self) -> None:
        self._hasher.update(self._unhashed)
        self._unhashed.clear()
