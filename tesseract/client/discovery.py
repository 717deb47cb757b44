"""Reading expert announcements from the DHT: who serves a uid, which successors of a prefix are alive.

The records are those ``tesseract.server.announce`` writes. Everything read is untrusted: a sub-key
that is not an in-grid integer, or a value that is not ``[uid, endpoint]``, is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tesseract.dht import DHTNode
from tesseract.expert_uid import ExpertInfo, parse_prefix, parse_uid


async def get_experts(dht: DHTNode, uids: Sequence[str]) -> list[ExpertInfo | None]:
    """The live endpoint of each uid, or None."""
    for uid in uids:
        parse_uid(uid)
    found = await dht.get_many(list(uids))
    infos: list[ExpertInfo | None] = []
    for uid in uids:
        record = found[uid]
        ok = record is not None and not record.is_dictionary and isinstance(record.value, str)
        infos.append(ExpertInfo(uid, record.value) if ok else None)
    return infos


async def get_active_successors(
    dht: DHTNode, prefixes: Sequence[str], grid_size: int | None = None, *, latest: bool = False
) -> dict[str, dict[int, ExpertInfo]]:
    """For each prefix, the live next coordinates and one expert under each (one batched round).

    ``latest`` asks every replica and merges their sub-keys: servers announce a prefix one sub-key at
    a time, and a replica that joined after some of them holds only part of it until they renew.
    """
    for prefix in prefixes:
        parse_prefix(prefix)
    found = await dht.get_many(list(prefixes), latest=latest)
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


async def find_alive_prefixes(dht: DHTNode, prefixes: Iterable[str]) -> list[str]:
    """The prefixes (in the given order) under which at least one expert is alive."""
    prefixes = list(prefixes)
    successors = await get_active_successors(dht, prefixes)
    return [prefix for prefix in prefixes if successors[prefix]]


__all__ = ["find_alive_prefixes", "get_active_successors", "get_experts"]
