"""The DHT's sans-IO core against simple models (hypothesis stateful tests)."""

from __future__ import annotations

import random

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tesseract.dht.ids import ID_BITS, MAX_ID
from tesseract.dht.routing import RoutingTable
from tesseract.dht.storage import RecordStore

ids = st.integers(0, MAX_ID - 1)
# Ids that crowd near our own id (prefix-sharing), so buckets really split deep.
OWN = random.Random(1).getrandbits(ID_BITS)
near_ids = st.integers(0, 2**40).map(lambda offset: OWN ^ offset)


class RoutingTableMachine(RuleBasedStateMachine):
    """Model: the set of nodes we have heard of and that never failed a ping since."""

    def __init__(self) -> None:
        super().__init__()
        self.table = RoutingTable(OWN, k=4, replacement_cache=3)
        self.alive: set[int] = set()
        self.failed: set[int] = set()
        self.pending_pings: list[int] = []
        self.now = 0.0

    @rule(node=st.one_of(ids, near_ids))
    def observe(self, node: int) -> None:
        self.now += 1
        ping = self.table.observe(node, f"n{node}", self.now)
        if node != OWN:
            self.alive.add(node)
            self.failed.discard(node)
        if ping is not None:
            assert ping.oldest.node_id in self.table
            self.pending_pings.append(ping.oldest.node_id)

    @precondition(lambda self: self.pending_pings)
    @rule(alive=st.booleans())
    def answer_ping(self, alive: bool) -> None:
        node = self.pending_pings.pop(0)
        before = set(p.node_id for p in self.table.peers())
        self.table.ping_result(node, alive, self.now)
        after = set(p.node_id for p in self.table.peers())
        if alive:
            assert after == before  # a live node is never evicted
        else:
            self.failed.add(node)
            self.alive.discard(node)
            assert node not in after

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def contact_fails(self, data) -> None:
        node = data.draw(st.sampled_from(sorted(self.alive)))
        self.table.contact_failed(node)
        self.alive.discard(node)
        self.failed.add(node)
        assert node not in self.table

    @invariant()
    def buckets_are_bounded_and_consistent(self) -> None:
        lower = 0
        for bucket in self.table.buckets:
            assert bucket.lower == lower and bucket.lower < bucket.upper
            assert len(bucket.nodes) <= self.table.k
            assert all(bucket.covers(node) for node in bucket.nodes)
            lower = bucket.upper
        assert lower == MAX_ID

    @invariant()
    def own_id_never_stored_and_only_known_live_nodes(self) -> None:
        stored = {p.node_id for p in self.table.peers()}
        assert OWN not in stored
        assert stored <= self.alive  # eviction only after a failed ping / contact
        assert not stored & self.failed

    @invariant()
    def nearest_is_sorted_by_xor(self) -> None:
        target = OWN ^ 12345
        found = [p.node_id for p in self.table.nearest(target, 5)]
        everyone = sorted((p.node_id for p in self.table.peers()), key=lambda n: n ^ target)
        assert found == everyone[:5]


TestRoutingTable = RoutingTableMachine.TestCase


class RecordStoreMachine(RuleBasedStateMachine):
    """Model: a dict of key -> (value, expiration) or key -> {subkey: (value, expiration)}."""

    def __init__(self) -> None:
        super().__init__()
        self.store = RecordStore(max_entries=6, max_bytes=60, max_value_size=20)
        self.model: dict[int, object] = {}
        self.now = 0.0

    def live(self, key: int):
        entry = self.model.get(key)
        if entry is None:
            return None
        if isinstance(entry, dict):
            alive = {s: e for s, e in entry.items() if e[1] > self.now}
            return alive or None
        return entry if entry[1] > self.now else None

    def forget_evicted(self, before: int, newcomer_expiration: float) -> None:
        for key, subkey, expiration in self.store.evicted[before:]:
            assert expiration < newcomer_expiration  # only ever for a later-expiring newcomer
            entry = self.model.get(key)
            if subkey is None or not isinstance(entry, dict):
                self.model.pop(key, None)
            else:
                entry.pop(subkey, None)

    @rule(dt=st.floats(0, 5))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(key=st.integers(0, 4), value=st.binary(max_size=8), ttl=st.floats(-2, 20))
    def store_value(self, key: int, value: bytes, ttl: float) -> None:
        expiration = self.now + ttl
        before = len(self.store.evicted)
        result = self.store.store(key, value, expiration, self.now)
        self.forget_evicted(before, expiration)
        current = self.live(key)
        if not result.accepted:
            assert result.reason in ("expired", "outdated", "full")
            if result.reason == "outdated":
                best = max(e[1] for e in current.values()) if isinstance(current, dict) else current[1]
                assert expiration <= best
            return
        assert ttl > 0
        if current is not None:
            best = max(e[1] for e in current.values()) if isinstance(current, dict) else current[1]
            assert expiration > best  # only newer writes win
        self.model[key] = (value, expiration)

    @rule(
        key=st.integers(0, 4),
        subkey=st.sampled_from([b"a", b"b", b"c"]),
        value=st.binary(max_size=8),
        ttl=st.floats(-2, 20),
    )
    def store_subkey(self, key: int, subkey: bytes, value: bytes, ttl: float) -> None:
        expiration = self.now + ttl
        before = len(self.store.evicted)
        result = self.store.store(key, value, expiration, self.now, subkey=subkey)
        self.forget_evicted(before, expiration)
        current = self.live(key)
        if not result.accepted:
            return
        assert ttl > 0
        if isinstance(current, dict):
            if subkey in current:
                assert expiration > current[subkey][1]
            current[subkey] = (value, expiration)
            self.model[key] = current
        else:
            if current is not None:
                assert expiration > current[1]
            self.model[key] = {subkey: (value, expiration)}

    @rule(key=st.integers(0, 4))
    def get(self, key: int) -> None:
        record = self.store.get(key, self.now)
        expected = self.live(key)
        if record is None:
            assert expected is None, "the store lost a live record it never reported evicting"
            return
        assert expected is not None, "the store returned something the model says is gone"
        if record.is_dictionary:
            assert isinstance(expected, dict)
            for subkey, entry in record.subkeys.items():
                assert entry.expiration > self.now
                assert (entry.value, entry.expiration) == expected[subkey]
        else:
            assert record.value.expiration > self.now
            assert (record.value.value, record.value.expiration) == expected

    @invariant()
    def bounded(self) -> None:
        assert self.store.entries <= self.store.max_entries
        assert self.store.bytes <= self.store.max_bytes


TestRecordStore = RecordStoreMachine.TestCase


def test_full_store_keeps_fresher_records_against_a_flood() -> None:
    store = RecordStore(max_entries=3)
    for key in range(3):
        assert store.store(key, b"v", expiration=100.0, now=0.0).accepted
    for key in range(3, 50):  # a flood of shorter-lived writes
        assert store.store(key, b"spam", expiration=50.0, now=0.0) == (False, "full")
    assert all(store.get(key, now=1.0) is not None for key in range(3))
    assert store.store(99, b"later", expiration=200.0, now=0.0).accepted  # evicts one of the 100s
    assert store.entries == 3


def test_oversized_values_are_refused() -> None:
    store = RecordStore(max_value_size=10)
    assert store.store(1, b"x" * 11, expiration=10.0, now=0.0) == (False, "too_large")


def test_a_refused_newcomer_evicts_nothing() -> None:
    store = RecordStore(max_entries=10, max_bytes=30, max_value_size=30)
    assert store.store(1, b"a" * 10, expiration=10.0, now=0.0).accepted
    assert store.store(2, b"b" * 10, expiration=100.0, now=0.0).accepted
    assert store.store(3, b"c" * 10, expiration=100.0, now=0.0).accepted
    # Needs 20 bytes: only the 10-byte entry expiring at 10 is older than the newcomer (50).
    assert store.store(4, b"d" * 20, expiration=50.0, now=0.0) == (False, "full")
    assert store.get(1, now=1.0) is not None and store.evicted == []
    assert store.store(5, b"e" * 10, expiration=50.0, now=0.0).accepted  # one 10-byte eviction is enough
    assert store.get(1, now=1.0) is None and [e[0] for e in store.evicted] == [1]
