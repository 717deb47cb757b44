"""The batching policy without I/O: whole requests, oldest first, never over the limit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tesseract.runtime.pool import Task, TaskPool, pick_pool


def task(rows: int, arrival: float) -> Task:
    return Task([torch.zeros(rows, 1)], rows, arrival, event=None)


@given(
    limit=st.integers(1, 64),
    requests=st.lists(st.tuples(st.integers(1, 64), st.booleans()), max_size=30),
)
def test_batches_take_whole_requests_oldest_first_within_the_limit(limit, requests) -> None:
    pool = TaskPool("ffn.0", "forward", limit)
    live = []
    for arrival, (rows, cancelled) in enumerate(requests):
        rows = min(rows, limit)
        submitted = task(rows, float(arrival))
        pool.submit(submitted)
        submitted.cancelled = cancelled
        if not cancelled:
            live.append(submitted)
    taken = []
    while batch := pool.take_batch():
        assert sum(t.rows for t in batch) <= limit
        assert not any(t.cancelled for t in batch)
        taken.extend(batch)
    assert taken == live  # every live request exactly once, in arrival order


def test_a_request_over_the_limit_is_refused_not_split() -> None:
    pool = TaskPool("ffn.0", "forward", 8)
    with pytest.raises(ValueError, match="9 rows exceeds max_batch_size 8"):
        pool.submit(task(9, 0.0))
    assert len(pool) == 0


def test_the_pool_whose_oldest_live_request_waited_longest_goes_first() -> None:
    a, b, c = (TaskPool(f"ffn.{i}", "forward", 8) for i in range(3))
    a.submit(task(1, 5.0))
    old = task(1, 1.0)
    b.submit(old)
    b.submit(task(1, 6.0))
    c.submit(task(1, 3.0))
    assert pick_pool([a, b, c]) is b
    old.cancelled = True  # its caller left: it no longer counts
    assert pick_pool([a, b, c]) is c
    assert pick_pool([TaskPool("ffn.9", "forward", 8)]) is None
