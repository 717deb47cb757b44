"""The lookup state machine against brute-force XOR search over a synthetic swarm (no network)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tesseract.dht.ids import random_id
from tesseract.dht.lookup import Lookup
from tesseract.dht.routing import Peer, RoutingTable
from tesseract.dht.storage import Entry, Record


def build_swarm(count: int, seed: int, k: int = 20) -> dict[int, RoutingTable]:
    rng = random.Random(seed)
    ids = [random_id(rng) for _ in range(count)]
    tables = {node: RoutingTable(node, k=k) for node in ids}
    for table in tables.values():  # each node knows a random sample, as after a bootstrap
        for other in rng.sample(ids, min(count, 60)):
            table.observe(other, f"n{other}", 0.0)
    for node, table in tables.items():  # plus its true neighbourhood, as Kademlia converges to
        for other in sorted(ids, key=lambda x: x ^ node)[1 : k + 1]:
            table.observe(other, f"n{other}", 0.0)
    return tables


def run_lookup(tables, start: int, target: int, *, dead=frozenset(), values=None, k=20) -> Lookup:
    values = values or {}
    lookup = Lookup(target, k=k, alpha=3, want_value=bool(values), own_id=start)
    lookup.add_candidates(tables[start].nearest(target, k))
    while not lookup.done:
        batch = lookup.next_peers()
        if not batch:
            break
        for peer in batch:
            if peer.node_id in dead:
                lookup.on_failure(peer.node_id)
            else:
                record = values.get(peer.node_id)
                lookup.on_response(peer.node_id, tables[peer.node_id].nearest(target, k), record)
    return lookup


@given(seed=st.integers(0, 10_000))
def test_node_lookup_finds_the_true_k_closest(seed: int) -> None:
    tables = build_swarm(300, seed)
    rng = random.Random(seed + 1)
    target = random_id(rng)
    start = rng.choice(list(tables))
    lookup = run_lookup(tables, start, target)
    found = {p.node_id for p in lookup.closest(20)}
    truth = set(sorted((n for n in tables if n != start), key=lambda n: n ^ target)[:20])
    assert len(found & truth) / len(found | truth) >= 0.9


def test_dead_nodes_are_skipped_and_the_lookup_still_ends() -> None:
    tables = build_swarm(300, 3)
    rng = random.Random(4)
    dead = frozenset(rng.sample(list(tables), 90))
    alive = [n for n in tables if n not in dead]
    target = random_id(rng)
    lookup = run_lookup(tables, alive[0], target, dead=dead)
    assert lookup.done
    truth = set(sorted((n for n in alive if n != alive[0]), key=lambda n: n ^ target)[:20])
    found = {p.node_id for p in lookup.closest(20)}
    assert not found & dead
    assert len(found & truth) / len(found | truth) >= 0.8


def test_value_lookup_stops_at_the_first_fresh_value_and_reports_who_lacked_it() -> None:
    tables = build_swarm(300, 5)
    rng = random.Random(6)
    target = random_id(rng)
    holders = sorted(tables, key=lambda n: n ^ target)[:20]
    values = {holder: Record(Entry(b"v", 100.0)) for holder in holders[5:]}
    start = rng.choice([n for n in tables if n not in holders])
    lookup = run_lookup(tables, start, target, values=values)
    assert lookup.record is not None and lookup.record.value == Entry(b"v", 100.0)
    assert lookup.found_at_round is not None and lookup.found_at_round <= lookup.rounds
    queried = sum(1 for state in lookup.state.values() if state != 0)
    assert queried < 40  # stopped early rather than exhausting the neighbourhood
    assert all(peer.node_id not in values for peer in lookup.lacking)


def test_latest_value_lookup_merges_everything_it_sees() -> None:
    tables = build_swarm(200, 7)
    target = random_id(random.Random(8))
    holders = sorted(tables, key=lambda n: n ^ target)[:20]
    values = {
        h: Record(None, {b"a": Entry(b"old", 10.0 + i), b"b": Entry(b"x", 5.0)})
        for i, h in enumerate(holders)
    }
    start = next(n for n in tables if n not in holders)
    lookup = Lookup(target, want_value=True, is_fresh=lambda record: False, own_id=start)
    lookup.add_candidates(tables[start].nearest(target, 20))
    while not lookup.done:
        for peer in lookup.next_peers():
            lookup.on_response(
                peer.node_id, tables[peer.node_id].nearest(target, 20), values.get(peer.node_id)
            )
    assert lookup.record is not None
    assert lookup.record.subkeys[b"a"].expiration == 10.0 + 19  # the newest sub-key from anyone
    assert isinstance(lookup.closest()[0], Peer)
