"""The beam search without I/O, against brute force; and the finder's one round per dimension."""

from __future__ import annotations

import itertools

import torch
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tesseract.client.beam_search import BeamSearch
from tesseract.client.routing import ExpertFinder
from tesseract.dht import DHTNode
from tesseract.expert_uid import ExpertInfo
from tesseract.server.announce import declare_experts
from tests.moe_swarm import start_bootstrap
from tests.worlds import SimWorld


def live_successors(alive: set[tuple[int, ...]], prefix: str) -> dict[int, ExpertInfo]:
    """What the DHT would say: coordinates after ``prefix`` with a live expert under them."""
    depth = prefix.count(".")
    head = tuple(int(c) for c in prefix.split(".")[1:])
    found: dict[int, ExpertInfo] = {}
    for coordinates in sorted(alive):
        if coordinates[:depth] == head:
            uid = "ffn." + ".".join(map(str, coordinates))
            found.setdefault(coordinates[depth], ExpertInfo(uid, f"server-of-{uid}:1"))
    return found


def search(scores, grid, k_best, alive, exclude=()):
    beam = BeamSearch("ffn", scores, grid, k_best, exclude=exclude)
    rounds = 0
    while wanted := beam.wanted():
        rounds += 1
        beam.feed({prefix: live_successors(alive, prefix) for prefix in wanted})
    return beam.result(), rounds


grids = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(grid=grids, batch=st.integers(1, 4), k_best=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_with_every_expert_alive_the_result_is_the_exact_top_k(grid, batch, k_best, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = [torch.randn(batch, size, generator=generator).tolist() for size in grid]
    alive = set(itertools.product(*(range(size) for size in grid)))
    result, rounds = search(scores, grid, k_best, alive)
    assert rounds == len(grid)  # one round per dimension, whatever the batch size
    for sample in range(batch):
        total = {c: sum(scores[d][sample][x] for d, x in enumerate(c)) for c in alive}
        best = sorted(total.values(), reverse=True)[:k_best]
        got = [expert.score for expert in result[sample]]
        assert got == sorted(got, reverse=True)
        assert [round(v, 5) for v in got] == [round(v, 5) for v in best]


@settings(max_examples=150, deadline=None)
@given(
    grid=grids,
    k_best=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    dead_share=st.floats(0, 1),
    exclude_share=st.floats(0, 0.5),
)
def test_only_live_not_excluded_experts_are_chosen(grid, k_best, seed, dead_share, exclude_share) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = [torch.randn(3, size, generator=generator).tolist() for size in grid]
    everything = list(itertools.product(*(range(size) for size in grid)))
    draws = torch.rand(len(everything), generator=generator).tolist()
    alive = {c for c, u in zip(everything, draws, strict=True) if u >= dead_share}
    excluded = {
        "ffn." + ".".join(map(str, c)) for c, u in zip(everything, draws, strict=True) if u < exclude_share
    }
    result, rounds = search(scores, grid, k_best, alive, exclude=excluded)
    assert rounds <= len(grid)
    for experts in result:
        assert len(experts) <= k_best
        assert len({e.uid for e in experts}) == len(experts)
        for expert in experts:
            assert expert.coordinates in alive and expert.uid not in excluded
            assert expert.uid == "ffn." + ".".join(map(str, expert.coordinates))
            assert expert.endpoint == f"server-of-{expert.uid}:1"
    if not alive:
        assert result == [[], [], []]


def test_the_finder_makes_one_dht_round_per_dimension_and_caches_hits_and_misses() -> None:
    world = SimWorld()

    async def main(world) -> None:
        boot = await start_bootstrap(world)
        host = await world.new_host()
        async with DHTNode.start(host, [boot.address], leave_gracefully=False) as node:
            await declare_experts(node, ["ffn.0.1", "ffn.2.0"], "server:1", host.wall_time() + 600)
            finder = ExpertFinder(node, cache_ttl=5)
            scores = [[[0.0, 0.0, 0.0]] * 32, [[0.0, 0.0]] * 32]
            chosen = await finder.find_best("ffn", scores, (3, 2), k_best=4)
            assert finder.rounds == 2
            assert all({e.uid for e in experts} == {"ffn.0.1", "ffn.2.0"} for experts in chosen)
            await finder.successors(["ffn.1"])  # a prefix with nothing under it: a miss, cached too
            await finder.find_best("ffn", scores, (3, 2), k_best=4)
            await finder.successors(["ffn.1"])
            assert finder.rounds == 3
            await trio.sleep(6)  # the cache expires
            await finder.find_best("ffn", scores, (3, 2), k_best=4)
            assert finder.rounds == 5

    world.run(main)


def test_records_outside_the_grid_or_under_another_uid_are_never_chosen() -> None:
    scores = [[[5.0, 0.0]], [[5.0, 1.0, 0.0]]]  # ffn.0.1 scores 6, ffn.1.0 scores 5
    search = BeamSearch("ffn", scores, (2, 3), k_best=3)
    search.feed(
        {
            "ffn": {
                0: ExpertInfo("ffn.0.0", "a:1"),
                1: ExpertInfo("ffn.1.0", "b:1"),
                7: ExpertInfo("ffn.7.0", "c:1"),
            }
        }
    )
    search.feed(
        {
            "ffn.0": {
                0: ExpertInfo("evil.0.0", "x:1"),
                1: ExpertInfo("ffn.0.1", "a:1"),
                5: ExpertInfo("ffn.0.5", "a:1"),
            },
            "ffn.1": {0: ExpertInfo("ffn.1.0", "b:1")},
        }
    )
    (chosen,) = search.result()
    assert [e.uid for e in chosen] == ["ffn.0.1", "ffn.1.0"]
    assert [e.endpoint for e in chosen] == ["a:1", "b:1"]
