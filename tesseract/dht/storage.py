"""Records with expirations, without I/O.

- A key holds either a plain value or a dictionary of sub-keys, each with its own expiration.
- The value with the latest expiration wins: a write that is not newer than what is stored is
  rejected (for a dictionary, per sub-key). A plain value replaces a dictionary only if it outlives
  every sub-key, and a sub-key turns a plain value into a dictionary only if it outlives the value.
- Expired entries are never returned.
- The store is bounded (entries and bytes). When full, the earliest-expiring entry is evicted, but
  only for a newcomer that expires later: a flood of short-lived writes can never push out fresher
  records.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple

from tesseract.dht.ids import NodeID

SubKey = bytes


class Entry(NamedTuple):
    value: bytes
    expiration: float


@dataclass
class Record:
    """What ``get`` returns: a plain value, or live sub-keys."""

    value: Entry | None = None
    subkeys: dict[SubKey, Entry] = field(default_factory=dict)

    @property
    def expiration(self) -> float:
        if self.value is not None:
            return self.value.expiration
        return max((entry.expiration for entry in self.subkeys.values()), default=float("-inf"))

    @property
    def is_dictionary(self) -> bool:
        return self.value is None


class StoreResult(NamedTuple):
    accepted: bool
    reason: str  # "stored", "outdated", "expired", "too_large", "full"


class RecordStore:
    def __init__(
        self, *, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024, max_value_size: int = 32_768
    ):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_size = max_value_size
        self._records: dict[NodeID, Record] = {}
        # (expiration, key, subkey or None); entries may be stale and are checked when popped.
        self._by_expiration: list[tuple[float, NodeID, SubKey | None]] = []
        self.entries = 0
        self.bytes = 0
        #: Entries evicted to make room, (key, subkey, expiration), most recent last; bounded.
        self.evicted: list[tuple[NodeID, SubKey | None, float]] = []

    def __len__(self) -> int:
        return len(self._records)

    def stored_keys(self) -> list[NodeID]:
        return list(self._records)

    def store(
        self, key: NodeID, value: bytes, expiration: float, now: float, subkey: SubKey | None = None
    ) -> StoreResult:
        if expiration <= now:
            return StoreResult(False, "expired")
        size = len(value) + (len(subkey) if subkey is not None else 0)
        if size > self.max_value_size:
            return StoreResult(False, "too_large")
        record = self._live_record(key, now)
        if record is not None and not self._newer_than_stored(record, subkey, expiration):
            return StoreResult(False, "outdated")
        replaced = self._replaced_size(record, subkey)
        if not self._make_room(size - replaced[1], 1 - replaced[0], expiration, now):
            return StoreResult(False, "full")
        record = self._records.get(key)  # eviction may have removed it
        if record is None:
            record = self._records[key] = Record()
        if subkey is None:
            self._drop_record_contents(record)
            record.value = Entry(value, expiration)
        else:
            if record.value is not None:
                self._account(-1, -len(record.value.value))
                record.value = None
            old = record.subkeys.get(subkey)
            if old is not None:
                self._account(-1, -(len(old.value) + len(subkey)))
            record.subkeys[subkey] = Entry(value, expiration)
        self._account(1, size)
        heapq.heappush(self._by_expiration, (expiration, key, subkey))
        return StoreResult(True, "stored")

    def get(self, key: NodeID, now: float) -> Record | None:
        """The live part of a record (a copy), or None."""
        record = self._live_record(key, now)
        if record is None:
            return None
        return Record(record.value, dict(record.subkeys))

    def purge(self, now: float) -> int:
        """Drop every expired entry; return how many."""
        removed = 0
        heap = self._by_expiration
        while heap and heap[0][0] <= now:
            _, key, subkey = heapq.heappop(heap)
            removed += self._remove_if_expired(key, subkey, now)
        return removed

    # ----- internals ---------------------------------------------------------------------------

    @staticmethod
    def _newer_than_stored(record: Record, subkey: SubKey | None, expiration: float) -> bool:
        if subkey is None:
            return expiration > record.expiration
        if record.value is not None:
            return expiration > record.value.expiration
        existing = record.subkeys.get(subkey)
        return existing is None or expiration > existing.expiration

    @staticmethod
    def _replaced_size(record: Record | None, subkey: SubKey | None) -> tuple[int, int]:
        """(entries, bytes) that this write will replace in ``record``."""
        if record is None:
            return 0, 0
        if subkey is None:
            if record.value is not None:
                return 1, len(record.value.value)
            return len(record.subkeys), sum(len(e.value) + len(k) for k, e in record.subkeys.items())
        if record.value is not None:
            return 1, len(record.value.value)
        old = record.subkeys.get(subkey)
        return (1, len(old.value) + len(subkey)) if old is not None else (0, 0)

    def _make_room(self, extra_bytes: int, extra_entries: int, expiration: float, now: float) -> bool:
        """Evict earliest-expiring entries for a newcomer expiring at ``expiration``, or evict nothing:
        if the room cannot be made from entries that expire sooner than the newcomer, refuse it."""
        self.purge(now)
        entries_over = self.entries + extra_entries - self.max_entries
        bytes_over = self.bytes + extra_bytes - self.max_bytes
        victims: list[tuple[float, NodeID, SubKey | None]] = []
        while entries_over > 0 or bytes_over > 0:
            victim = self._earliest_live()
            if victim is None or victim[0] >= expiration:
                for entry in victims:  # not enough room: put the candidates back untouched
                    heapq.heappush(self._by_expiration, entry)
                return False
            heapq.heappop(self._by_expiration)
            victims.append(victim)
            entries_over -= 1
            bytes_over -= self._entry_size(victim[1], victim[2])
        for victim_expiration, key, subkey in victims:
            self._remove_entry(key, subkey)
            self.evicted.append((key, subkey, victim_expiration))
        del self.evicted[:-100]
        return True

    def _entry_size(self, key: NodeID, subkey: SubKey | None) -> int:
        record = self._records[key]
        if subkey is None:
            assert record.value is not None
            return len(record.value.value)
        return len(record.subkeys[subkey].value) + len(subkey)

    def _earliest_live(self) -> tuple[float, NodeID, SubKey | None] | None:
        heap = self._by_expiration
        while heap:
            expiration, key, subkey = heap[0]
            if self._entry_expiration(key, subkey) == expiration:
                return heap[0]
            heapq.heappop(heap)  # stale: overwritten or removed since
        return None

    def expiration_of(self, key: NodeID, subkey: SubKey | None, now: float) -> float | None:
        """The expiration of one live entry (a plain value for ``subkey`` None), or None."""
        self.purge(now)
        return self._entry_expiration(key, subkey)

    def _entry_expiration(self, key: NodeID, subkey: SubKey | None) -> float | None:
        record = self._records.get(key)
        if record is None:
            return None
        if subkey is None:
            return record.value.expiration if record.value is not None else None
        entry = record.subkeys.get(subkey)
        return entry.expiration if entry is not None else None

    def _remove_if_expired(self, key: NodeID, subkey: SubKey | None, now: float) -> int:
        expiration = self._entry_expiration(key, subkey)
        if expiration is None or expiration > now:
            return 0
        self._remove_entry(key, subkey)
        return 1

    def _remove_entry(self, key: NodeID, subkey: SubKey | None) -> None:
        record = self._records[key]
        if subkey is None:
            assert record.value is not None
            self._account(-1, -len(record.value.value))
            record.value = None
        else:
            entry = record.subkeys.pop(subkey)
            self._account(-1, -(len(entry.value) + len(subkey)))
        if record.value is None and not record.subkeys:
            del self._records[key]

    def _drop_record_contents(self, record: Record) -> None:
        entries, size = self._replaced_size(record, None)
        self._account(-entries, -size)
        record.value = None
        record.subkeys.clear()

    def _live_record(self, key: NodeID, now: float) -> Record | None:
        # Every live entry has its expiration in the heap, so purging drops exactly the expired
        # ones, each once: a store into a dictionary of n sub-keys costs log n, not a pass over it.
        self.purge(now)
        return self._records.get(key)

    def _account(self, entries: int, size: int) -> None:
        self.entries += entries
        self.bytes += size
