"""How a server tells the DHT which experts it serves.

For each uid it stores the sub-key entry ``uid -> {endpoint: endpoint}`` (several servers may host
replicas of one uid, and each keeps its own entry) and, under every proper prefix of the uid, one
sub-key entry for the next coordinate (``ffn -> {3: [uid, endpoint]}``, ``ffn.3 -> {14: [uid, endpoint]}``),
so a beam search can ask "which successors of these prefixes are alive?" in one batched DHT round
(``tesseract.client.discovery``). A prefix entry needs one live expert under it, so a server with many
experts under one (prefix, coordinate) announces that entry once, not once per expert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tesseract.dht import DHTNode
from tesseract.expert_uid import parse_uid, uid_prefixes


def announcement_items(
    uids: Sequence[str], endpoint: str, expiration: float
) -> tuple[list[tuple[str, Any, float, Any]], list[list[str]]]:
    """The DHT items (key, value, expiration, sub-key) announcing ``uids``, and for each item the uids
    whose announcement depends on it. ValueError on a malformed uid."""
    items: list[tuple[str, Any, float, Any]] = []
    owners: list[list[str]] = []
    prefix_items: dict[tuple[str, int], int] = {}
    for uid in uids:
        parse_uid(uid)
        items.append((uid, endpoint, expiration, endpoint))
        owners.append([uid])
        for prefix, coordinate in uid_prefixes(uid):
            index = prefix_items.get((prefix, coordinate))
            if index is None:
                prefix_items[(prefix, coordinate)] = len(items)
                items.append((prefix, [uid, endpoint], expiration, coordinate))
                owners.append([uid])
            else:
                owners[index].append(uid)
    return items, owners


async def declare_experts(
    dht: DHTNode, uids: Sequence[str], endpoint: str, expiration: float
) -> dict[str, bool]:
    """Announce that ``endpoint`` serves ``uids`` until ``expiration``; uid -> all its records stored."""
    items, owners = announcement_items(uids, endpoint, expiration)
    results = await dht.store_many(items)
    stored = dict.fromkeys(uids, True)
    for item_owners, ok in zip(owners, results, strict=True):
        for uid in item_owners:
            stored[uid] = stored[uid] and ok
    return stored


__all__ = ["announcement_items", "declare_experts"]
