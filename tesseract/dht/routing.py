"""The Kademlia routing table, without I/O.

k-buckets cover ranges of the id space. A full bucket that holds our own id splits; any other full
bucket keeps its nodes (old nodes that still answer are the most reliable) and parks newcomers in a
replacement cache, asking its caller to ping the least-recently-seen node. Only a failed ping (or a
failed contact reported by the caller) evicts a node, and the freshest replacement takes its place.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from tesseract.dht.ids import ID_BITS, MAX_ID, NodeID


class Peer(NamedTuple):
    node_id: NodeID
    address: str


class PingRequest(NamedTuple):
    """Ping ``oldest``; report the outcome with ``RoutingTable.ping_result``."""

    oldest: Peer


@dataclass
class KBucket:
    lower: int  # inclusive
    upper: int  # exclusive
    depth: int
    nodes: OrderedDict[NodeID, str] = field(default_factory=OrderedDict)  # least recently seen first
    replacements: OrderedDict[NodeID, str] = field(default_factory=OrderedDict)
    last_updated: float = 0.0
    pinging: NodeID | None = None

    def covers(self, node_id: NodeID) -> bool:
        return self.lower <= node_id < self.upper


class RoutingTable:
    def __init__(self, own_id: NodeID, *, k: int = 20, replacement_cache: int = 20, now: float = 0.0) -> None:
        self.own_id = own_id
        self.k = k
        self.replacement_cache = replacement_cache
        # A new table counts as looked into at its creation (``now``): its first refresh comes one
        # interval later, whenever the node started (the join's own lookup fills it meanwhile).
        self.buckets: list[KBucket] = [KBucket(0, MAX_ID, 0, last_updated=now)]

    def __len__(self) -> int:
        return sum(len(bucket.nodes) for bucket in self.buckets)

    def __contains__(self, node_id: NodeID) -> bool:
        return node_id in self.bucket_for(node_id).nodes

    def bucket_for(self, node_id: NodeID) -> KBucket:
        low, high = 0, len(self.buckets) - 1
        while low < high:  # buckets are sorted and contiguous: binary search on the lower bounds
            middle = (low + high + 1) // 2
            if self.buckets[middle].lower <= node_id:
                low = middle
            else:
                high = middle - 1
        return self.buckets[low]

    def observe(self, node_id: NodeID, address: str, now: float) -> PingRequest | None:
        """We heard from this node (a request or a reply). Returns a ping to make, if any."""
        if node_id == self.own_id:
            return None
        while True:
            bucket = self.bucket_for(node_id)
            if node_id in bucket.nodes:
                bucket.nodes[node_id] = address
                bucket.nodes.move_to_end(node_id)
                bucket.last_updated = now
                return None
            if len(bucket.nodes) < self.k:
                bucket.nodes[node_id] = address
                bucket.replacements.pop(node_id, None)
                bucket.last_updated = now
                return None
            if bucket.covers(self.own_id) and bucket.depth < ID_BITS:
                self._split(bucket)
                continue
            bucket.replacements[node_id] = address
            bucket.replacements.move_to_end(node_id)
            while len(bucket.replacements) > self.replacement_cache:
                bucket.replacements.popitem(last=False)
            if bucket.pinging is not None:
                return None
            oldest_id, oldest_address = next(iter(bucket.nodes.items()))
            bucket.pinging = oldest_id
            return PingRequest(Peer(oldest_id, oldest_address))

    def ping_result(self, node_id: NodeID, alive: bool, now: float) -> None:
        bucket = self.bucket_for(node_id)
        if bucket.pinging == node_id:
            bucket.pinging = None
        if node_id not in bucket.nodes:
            return
        if alive:
            bucket.nodes.move_to_end(node_id)
            bucket.last_updated = now
        else:
            self._evict(bucket, node_id)

    def contact_failed(self, node_id: NodeID) -> None:
        """A request to this node went unanswered (its retries included): same as a failed ping."""
        bucket = self.bucket_for(node_id)
        if bucket.pinging == node_id:
            bucket.pinging = None
        if node_id in bucket.nodes:
            self._evict(bucket, node_id)
        else:
            bucket.replacements.pop(node_id, None)

    def _evict(self, bucket: KBucket, node_id: NodeID) -> None:
        del bucket.nodes[node_id]
        if bucket.replacements:
            replacement_id, address = bucket.replacements.popitem(last=True)
            bucket.nodes[replacement_id] = address

    def _split(self, bucket: KBucket) -> None:
        middle = (bucket.lower + bucket.upper) // 2
        left = KBucket(bucket.lower, middle, bucket.depth + 1, last_updated=bucket.last_updated)
        right = KBucket(middle, bucket.upper, bucket.depth + 1, last_updated=bucket.last_updated)
        for source, attribute in ((bucket.nodes, "nodes"), (bucket.replacements, "replacements")):
            for node_id, address in source.items():
                getattr(left if node_id < middle else right, attribute)[node_id] = address
        index = self.buckets.index(bucket)
        self.buckets[index : index + 1] = [left, right]

    def nearest(self, target: NodeID, count: int, exclude: NodeID | None = None) -> list[Peer]:
        """The ``count`` known nodes closest to ``target`` by XOR distance, closest first."""
        # A bucket is an aligned block of ids; XOR with the target maps it onto an aligned block of
        # distances that no other bucket's block overlaps. So visit the buckets by where their block
        # starts, and sort only the nodes of the few buckets that hold the answer.
        chosen: list[tuple[int, NodeID, str]] = []
        for bucket in sorted(self.buckets, key=lambda b: (b.lower ^ target) & -(b.upper - b.lower)):
            if len(chosen) >= count:
                break
            chosen.extend(
                sorted(
                    (node_id ^ target, node_id, address)
                    for node_id, address in bucket.nodes.items()
                    if node_id != exclude
                )
            )
        return [Peer(node_id, address) for _, node_id, address in chosen[:count]]

    def node_at(self, address: str) -> NodeID | None:
        """The node we know at ``address``, if any (a pass over the table: for rare events)."""
        for bucket in self.buckets:
            for node_id, known in bucket.nodes.items():
                if known == address:
                    return node_id
        return None

    def peers(self) -> list[Peer]:
        return [
            Peer(node_id, address) for bucket in self.buckets for node_id, address in bucket.nodes.items()
        ]

    def lookup_performed(self, target: NodeID, now: float) -> None:
        """A lookup explored ``target``'s bucket: it counts as fresh."""
        self.bucket_for(target).last_updated = now

    def stale_buckets(self, now: float, refresh_interval: float, rng: random.Random) -> list[NodeID]:
        """A random id in each bucket not updated for ``refresh_interval``: look them up to refresh."""
        return [
            rng.randrange(bucket.lower, bucket.upper)
            for bucket in self.buckets
            if now - bucket.last_updated >= refresh_interval
        ]
