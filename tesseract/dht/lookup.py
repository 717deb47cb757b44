"""The iterative Kademlia lookup for one target, without I/O.

The caller asks ``next_peers()`` for whom to query (at most ``alpha`` in flight), reports each answer
with ``on_response`` or ``on_failure``, and stops when ``done``. A node lookup ends when the ``k``
closest peers known have all answered or failed; a value lookup ends as soon as an answer carries a
fresh enough record (``is_fresh``), or else the same way, keeping the newest record seen. A peer that
holds the record but could not serve it whole is reported with ``unreadable``; the caller decides
what a lookup that found nothing else means.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable

from tesseract.dht.ids import NodeID
from tesseract.dht.records import merge_records
from tesseract.dht.routing import Peer
from tesseract.dht.storage import Record

NEW, INFLIGHT, ANSWERED, FAILED = range(4)


class Lookup:
    def __init__(
        self,
        target: NodeID,
        *,
        k: int = 20,
        alpha: int = 3,
        want_value: bool = False,
        is_fresh: Callable[[Record], bool] = lambda record: True,
        own_id: NodeID | None = None,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self.is_fresh = is_fresh
        self.own_id = own_id
        self.state: dict[NodeID, int] = {}
        self.addresses: dict[NodeID, str] = {}
        self.depth: dict[NodeID, int] = {}
        self._by_distance: list[tuple[int, NodeID]] = []  # every candidate, closest first
        self.inflight = 0
        self.record: Record | None = None
        self.found_at_round: int | None = None  # request round (1 = first peers asked) of a fresh value
        self.lacking: list[Peer] = []  # answered without the value, in the order they answered
        self.unreadable: list[Peer] = []  # hold the value but could not serve it whole
        self._finished_early = False

    def add_candidates(self, peers: Iterable[Peer], depth: int = 1) -> None:
        for node_id, address in peers:
            if node_id == self.own_id or node_id in self.state:
                continue
            self.state[node_id] = NEW
            self.addresses[node_id] = address
            self.depth[node_id] = depth
            insort(self._by_distance, (node_id ^ self.target, node_id))

    def next_peers(self) -> list[Peer]:
        """Peers to query now; marks them in flight."""
        if self.done:
            return []
        chosen: list[Peer] = []
        considered = 0
        for _, node_id in self._by_distance:
            state = self.state[node_id]
            if state == FAILED:
                continue
            considered += 1
            if considered > self.k:
                break  # only the k closest live candidates are worth asking
            if state == NEW and self.inflight < self.alpha:
                self.state[node_id] = INFLIGHT
                self.inflight += 1
                chosen.append(Peer(node_id, self.addresses[node_id]))
        return chosen

    def on_response(
        self, peer: NodeID, closer: Iterable[Peer], record: Record | None, *, unreadable: bool = False
    ) -> None:
        if self.state.get(peer) != INFLIGHT:
            return
        self.state[peer] = ANSWERED
        self.inflight -= 1
        self.add_candidates(closer, depth=self.depth[peer] + 1)
        if not self.want_value:
            return
        if unreadable:
            self.unreadable.append(Peer(peer, self.addresses[peer]))
            return
        if record is None:
            self.lacking.append(Peer(peer, self.addresses[peer]))
            return
        self.record = merge_records(self.record, record)
        if self.found_at_round is None:
            self.found_at_round = self.depth[peer]
        if self.is_fresh(self.record):
            self._finished_early = True

    def on_failure(self, peer: NodeID) -> None:
        if self.state.get(peer) != INFLIGHT:
            return
        self.state[peer] = FAILED
        self.inflight -= 1

    @property
    def done(self) -> bool:
        if self._finished_early:
            return True
        considered = 0
        for _, node_id in self._by_distance:
            state = self.state[node_id]
            if state == FAILED:
                continue
            considered += 1
            if considered > self.k:
                break
            if state != ANSWERED:
                return False
        return True

    def closest(self, count: int | None = None) -> list[Peer]:
        """The closest peers that answered, closest first."""
        answered = [n for _, n in self._by_distance if self.state[n] == ANSWERED]
        return [Peer(n, self.addresses[n]) for n in answered[: count or self.k]]

    @property
    def rounds(self) -> int:
        """How many request rounds deep the lookup went."""
        return max((self.depth[n] for n, s in self.state.items() if s in (ANSWERED, FAILED)), default=0)
