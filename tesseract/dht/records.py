"""Records in their three forms, and the conversions between them, without I/O.

- ``storage.Record``: what a node holds, values and sub-keys still msgpack-encoded bytes.
- ``protocol.RecordMessage`` / ``StoreItem``: the same on the wire; a dictionary record travels in
  pages (``record_page``) and is reassembled by merging them (``merge_records``).
- ``Found``: what ``DHTNode.get`` returns, values decoded. Everything decoded came from the network,
  so an entry that does not decode (or whose sub-key is not hashable) is left out, never raised.
"""

from __future__ import annotations

import bisect
from typing import Any, NamedTuple

import msgspec

from tesseract.dht import protocol as wire
from tesseract.dht.ids import NodeID, id_to_bytes
from tesseract.dht.storage import Entry, Record

_decode = msgspec.msgpack.decode
#: What a ``RecordMessage`` adds to its entries: array header, nil value, expiration, list header.
_RECORD_OVERHEAD = 1 + 1 + 9 + 5


class Found(NamedTuple):
    """A record read from the DHT: a plain ``value``, or for a dictionary record (``subkeys`` is not
    None) its live entries, each a ``Found`` of its own, with ``value`` None."""

    value: Any
    expiration: float
    subkeys: dict[Any, Found] | None = None

    @property
    def is_dictionary(self) -> bool:
        return self.subkeys is not None


def merge_records(a: Record | None, b: Record | None) -> Record | None:
    """The newest of two views of one key: per sub-key for dictionaries, whole for plain values."""
    if a is None or b is None:
        return a or b
    if a.is_dictionary and b.is_dictionary:
        merged = dict(a.subkeys)
        for subkey, entry in b.subkeys.items():
            if subkey not in merged or entry.expiration > merged[subkey].expiration:
                merged[subkey] = entry
        return Record(None, merged)
    return a if a.expiration >= b.expiration else b


def _bin_size(length: int) -> int:
    """Encoded size of a msgpack bin of ``length`` bytes."""
    return length + (2 if length < 256 else 3 if length < 65_536 else 5)


def entry_size(subkey: bytes, value: bytes) -> int:
    """Encoded size of one ``SubEntry``: array header, sub-key, value, 64-bit float."""
    return 1 + _bin_size(len(subkey)) + _bin_size(len(value)) + 9


def record_page(
    record: Record, budget: int, after: bytes | None = None
) -> tuple[wire.RecordMessage | None, bool]:
    """The part of ``record`` that fits ``budget`` encoded bytes, and whether more remains.

    A plain value is whole or absent. A dictionary's sub-keys go in ascending byte order, starting
    after ``after``, for as many as fit; a page holds at least one entry or is None."""
    if record.value is not None:
        if _bin_size(len(record.value.value)) + _RECORD_OVERHEAD > budget:
            return None, True
        return wire.RecordMessage(record.value.value, record.value.expiration), False
    subkeys = sorted(record.subkeys)
    start = 0 if after is None else bisect.bisect_right(subkeys, after)
    entries: list[wire.SubEntry] = []
    size = _RECORD_OVERHEAD
    for subkey in subkeys[start:]:
        entry = record.subkeys[subkey]
        size += entry_size(subkey, entry.value)
        if size > budget or len(entries) == wire.MAX_SUBKEYS_PER_PAGE:
            break
        entries.append(wire.SubEntry(subkey, entry.value, entry.expiration))
    more = start + len(entries) < len(subkeys)
    if not entries:
        return None, more
    return wire.RecordMessage(None, record.expiration, entries), more


def record_from_message(message: wire.RecordMessage | None) -> Record | None:
    """A received record (or page) as a ``Record``; None if it holds nothing."""
    if message is None:
        return None
    if message.subkeys is None:
        if message.value is None:
            return None
        return Record(Entry(message.value, message.expiration))
    if not message.subkeys:
        return None
    return Record(None, {e.subkey: Entry(e.value, e.expiration) for e in message.subkeys})


def items_from_record(target: NodeID, record: Record) -> list[wire.StoreItem]:
    """The store items that recreate ``record`` elsewhere (one per sub-key for a dictionary)."""
    raw = id_to_bytes(target)
    if record.value is not None:
        return [wire.StoreItem(raw, None, record.value.value, record.value.expiration)]
    return [
        wire.StoreItem(raw, subkey, entry.value, entry.expiration) for subkey, entry in record.subkeys.items()
    ]


def to_found(record: Record | None, now: float) -> Found | None:
    """The live, decodable part of ``record`` for a caller of ``get``; None if nothing is left."""
    if record is None or record.expiration <= now:
        return None
    if record.value is not None:
        try:
            return Found(_decode(record.value.value), record.value.expiration)
        except msgspec.DecodeError:
            return None
    entries: dict[Any, Found] = {}
    for subkey, entry in record.subkeys.items():
        if entry.expiration <= now:
            continue
        try:
            entries[_decode(subkey)] = Found(_decode(entry.value), entry.expiration)
        except (msgspec.DecodeError, TypeError):  # undecodable, or an unhashable sub-key
            continue
    return Found(None, record.expiration, entries) if entries else None


__all__ = [
    "Found",
    "entry_size",
    "items_from_record",
    "merge_records",
    "record_from_message",
    "record_page",
    "to_found",
]
