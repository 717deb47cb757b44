"""Expert records in the DHT: how servers announce experts and how the mixture finds them.

An expert uid is ``name.i.j...``: a name and one or more grid coordinates (``ffn.3.14``).
``declare_experts`` stores the uid itself (-> endpoint) and, for every prefix of it, one sub-key entry
naming the next coordinate (``ffn`` -> {3: ...}, ``ffn.3`` -> {14: (uid, endpoint)}), so a beam search
can ask "which successors of these prefixes are alive?" with one batched DHT round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from tesseract.dht.node import DHTNode

UID_DELIMITER = "."
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
MAX_COORDINATE = 1_000_000


class ExpertInfo(NamedTuple):
    uid: str
    endpoint: str


def parse_uid(uid: str) -> tuple[str, tuple[int, ...]]:
    """Split ``name.i.j`` into the name and its coordinates; ValueError naming the problem."""
    if not isinstance(uid, str):
        raise ValueError(f"expert uid must be a string, got {type(uid).__name__}")
    name, *coordinates = uid.split(UID_DELIMITER)
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad expert uid {uid!r}: the name must match {_NAME.pattern}")
    if not coordinates:
        raise ValueError(f"bad expert uid {uid!r}: expected at least one grid coordinate, like 'ffn.0'")
    values = []
    for text in coordinates:
        if not text.isdigit() or int(text) >= MAX_COORDINATE or (len(text) > 1 and text[0] == "0"):
            raise ValueError(
                f"bad expert uid {uid!r}: coordinate {text!r} is not an integer in [0, {MAX_COORDINATE})"
            )
        values.append(int(text))
    return name, tuple(values)


def parse_prefix(prefix: str) -> tuple[str, tuple[int, ...]]:
    """Like ``parse_uid`` but zero coordinates are allowed (``ffn`` is the prefix of every ffn expert)."""
    if not isinstance(prefix, str):
        raise ValueError(f"expert prefix must be a string, got {type(prefix).__name__}")
    if UID_DELIMITER not in prefix:
        if not _NAME.fullmatch(prefix):
            raise ValueError(f"bad expert prefix {prefix!r}: the name must match {_NAME.pattern}")
        return prefix, ()
    return parse_uid(prefix)


def uid_prefixes(uid: str) -> list[tuple[str, int]]:
    """(prefix, next coordinate) for every proper prefix of ``uid``."""
    name, coordinates = parse_uid(uid)
    return [
        (UID_DELIMITER.join([name, *map(str, coordinates[:depth])]), coordinates[depth])
        for depth in range(len(coordinates))
    ]


async def declare_experts(
    node: DHTNode, uids: Sequence[str], endpoint: str, expiration: float
) -> dict[str, bool]:
    """Announce that ``endpoint`` serves ``uids`` until ``expiration``; uid -> stored anywhere."""
    items: list[tuple[str, object, float, object]] = []
    owners: list[str] = []
    for uid in uids:
        parse_uid(uid)
        items.append((uid, endpoint, expiration, None))
        owners.append(uid)
        for prefix, coordinate in uid_prefixes(uid):
            items.append((prefix, [uid, endpoint], expiration, coordinate))
            owners.append(uid)
    results = await node.store_many(items)
    stored = dict.fromkeys(uids, True)
    for uid, ok in zip(owners, results, strict=True):
        stored[uid] = stored[uid] and ok
    return stored


async def get_experts(node: DHTNode, uids: Sequence[str]) -> list[ExpertInfo | None]:
    """The live endpoint of each uid, or None."""
    for uid in uids:
        parse_uid(uid)
    found = await node.get_many(list(uids))
    return [
        ExpertInfo(uid, found[uid].value)
        if found[uid] is not None and isinstance(found[uid].value, str)
        else None
        for uid in uids
    ]


async def get_active_successors(
    node: DHTNode, prefixes: Sequence[str], grid_size: int | None = None, *, latest: bool = False
) -> dict[str, dict[int, ExpertInfo]]:
    """For each prefix, the live next coordinates and one expert under each (one batched round).

    ``latest`` asks every replica and merges their sub-keys: servers announce a prefix one sub-key at
    a time, and a replica that joined after some of them holds only part of it until they renew.
    """
    for prefix in prefixes:
        parse_prefix(prefix)
    found = await node.get_many(list(prefixes), latest=latest)
    successors: dict[str, dict[int, ExpertInfo]] = {}
    for prefix in prefixes:
        entries: dict[int, ExpertInfo] = {}
        record = found[prefix]
        if record is not None and record.subkeys is not None:
            for coordinate, item in record.subkeys.items():
                if not isinstance(coordinate, int) or (
                    grid_size is not None and not 0 <= coordinate < grid_size
                ):
                    continue
                value = item.value
                if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
                    entries[coordinate] = ExpertInfo(value[0], value[1])
        successors[prefix] = entries
    return successors


async def find_alive_prefixes(node: DHTNode, prefixes: Iterable[str]) -> list[str]:
    """The prefixes (in the given order) under which at least one expert is alive."""
    prefixes = list(prefixes)
    successors = await get_active_successors(node, prefixes)
    return [prefix for prefix in prefixes if successors[prefix]]
