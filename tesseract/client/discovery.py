"""Reading expert announcements from the DHT: who serves a uid, which successors of a prefix are alive.

The records are those ``tesseract.server.announce`` writes. Everything read is untrusted: a sub-key
that is not an in-grid integer, or a value that is not ``[uid, endpoint]``, is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tesseract.dht import DHTNode
from tesseract.dht.records import Found
from tesseract.expert_uid import ExpertInfo, parse_prefix, parse_uid


async def get_experts(dht: DHTNode, uids: Sequence[str]) -> list[ExpertInfo | None]:
    """A live endpoint of each uid (the most recently renewed of those the first holder knows), or None."""
    for uid in uids:
        parse_uid(uid)
    found = await dht.get_many(list(dict.fromkeys(uids)))
    infos: list[ExpertInfo | None] = []
    for uid in uids:
        endpoints = _endpoints(found[uid])
        infos.append(ExpertInfo(uid, endpoints[0]) if endpoints else None)
    return infos


async def get_replicas(dht: DHTNode, uids: Sequence[str]) -> dict[str, list[str]]:
    """Every live endpoint of each uid, the most recently renewed first. Every replica of the record
    is asked and their entries merged: one that joined after some servers announced holds only the
    entries of the later ones until the others renew."""
    for uid in uids:
        parse_uid(uid)
    found = await dht.get_many(list(dict.fromkeys(uids)), latest=True)
    return {uid: _endpoints(found[uid]) for uid in uids}


def _endpoints(record: Found | None) -> list[str]:
    """A uid record's endpoints, the latest expiration first; entries not ``{endpoint: endpoint}`` are
    ignored."""
    entries = []
    if record is not None and record.subkeys is not None:
        for endpoint, item in record.subkeys.items():
            if isinstance(endpoint, str) and item.value == endpoint:
                entries.append((item.expiration, endpoint))
    return [endpoint for _, endpoint in sorted(entries, reverse=True)]


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


__all__ = ["find_alive_prefixes", "get_active_successors", "get_experts", "get_replicas"]
