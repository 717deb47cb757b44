"""The DHT's peer policy without a network: blacklist backoff, store token buckets, address tokens."""

from __future__ import annotations

import pytest

from tesseract.dht.policy import Blacklist, StoreRateLimiter
from tesseract.dht.tokens import (
    MAX_REPLY_OVERHEAD,
    MIN_REQUEST_OVERHEAD,
    REENCODING_SLACK,
    AddressTokens,
    smallest_request_for,
    within_amplification_limit,
)


def test_blacklist_backoff_doubles_up_to_its_maximum_and_an_answer_clears_it() -> None:
    blacklist = Blacklist(base=1.0, maximum=5.0)
    assert not blacklist.blocked("a:1", 0.0)
    assert [blacklist.failed("a:1", 0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert blacklist.blocked("a:1", 4.9) and not blacklist.blocked("a:1", 5.0)
    assert not blacklist.blocked("b:1", 0.0)
    blacklist.answered("a:1")
    assert not blacklist.blocked("a:1", 0.0)
    assert blacklist.failed("a:1", 10.0) == 1.0  # the backoff starts over after an answer


def test_blacklist_forgets_expired_entries_and_starts_over() -> None:
    blacklist = Blacklist(base=1.0, maximum=60.0)
    blacklist.failed("a:1", 0.0)
    blacklist.failed("a:1", 1.0)  # backoff 2 s, until t=3
    blacklist.failed("b:1", 0.0)
    blacklist.forget_expired(2.0)
    assert len(blacklist) == 1 and blacklist.blocked("a:1", 2.0)
    blacklist.forget_expired(3.0)
    assert len(blacklist) == 0
    assert blacklist.failed("a:1", 3.0) == 1.0


def test_a_store_bucket_grants_its_burst_then_its_rate() -> None:
    limiter = StoreRateLimiter(rate=10.0, burst=100.0)
    assert limiter.take("a:1", 60, now=0.0) == 60
    assert limiter.take("a:1", 60, now=0.0) == 40
    assert limiter.take("a:1", 60, now=0.0) == 0
    assert limiter.retry_after("a:1", 30, now=0.0) == pytest.approx(3.0)
    assert limiter.take("a:1", 60, now=3.0) == 30
    assert limiter.take("b:1", 100, now=3.0) == 100  # every address has its own bucket
    assert limiter.take("a:1", 1000, now=1000.0) == 100  # refilled to the burst, never beyond
    assert limiter.retry_after("a:1", 10**6, now=1000.0) == pytest.approx(10.0)  # a burst at most


def test_a_full_bucket_table_never_hands_a_flooder_a_fresh_burst() -> None:
    """Defect 9: with the table full, the oldest bucket (the flooder's, here) was forgotten, and the
    flooder's next request started from a full burst."""
    limiter = StoreRateLimiter(rate=1.0, burst=10.0, max_peers=4)
    assert limiter.take("flooder:1", 1000, now=0.0) == 10
    for i in range(20):  # many other addresses arrive while the flooder's bucket is empty
        limiter.take(f"peer{i}:1", 1, now=0.0)
        assert limiter.take("flooder:1", 1000, now=0.0) == 0
    assert len(limiter) <= 4
    assert limiter.take("flooder:1", 1000, now=2.0) == 2  # only what it earned at the rate


def test_newcomers_share_one_bucket_while_the_table_is_full_and_get_their_own_when_buckets_refill() -> None:
    limiter = StoreRateLimiter(rate=1.0, burst=10.0, max_peers=2)
    assert limiter.take("a:1", 10, now=0.0) == 10
    assert limiter.take("b:1", 10, now=0.0) == 10
    # No bucket may go: newcomers spend from the shared overflow bucket, all together.
    assert limiter.take("c:1", 6, now=0.0) == 6
    assert limiter.take("d:1", 6, now=0.0) == 4
    assert limiter.take("e:1", 6, now=0.0) == 0
    # Once a and b have refilled they carry no information: they go, and c gets a bucket of its own.
    assert limiter.take("c:1", 10, now=20.0) == 10
    assert limiter.take("a:1", 10, now=20.0) == 10
    assert limiter.take("b:1", 10, now=20.0) == 10  # overflow (the table is full), refilled by now
    assert len(limiter) == 2
    limiter.forget_refilled(now=100.0)
    assert len(limiter) == 0


def test_address_tokens_hold_for_their_address_in_this_epoch_and_the_next_only() -> None:
    tokens = AddressTokens(b"s" * 32, epoch=100.0)
    token = tokens.issue("10.0.0.1:4000", now=150.0)
    assert len(token) == 16
    assert tokens.valid("10.0.0.1:4000", token, now=150.0)
    assert tokens.valid("10.0.0.1:4000", token, now=299.0)
    assert not tokens.valid("10.0.0.1:4000", token, now=300.0)
    assert not tokens.valid("10.0.0.1:4001", token, now=150.0)
    assert not tokens.valid("10.0.0.1:4000", b"", now=150.0)
    assert not tokens.valid("10.0.0.1:4000", bytes(16), now=150.0)
    assert not AddressTokens(b"t" * 32, epoch=100.0).valid("10.0.0.1:4000", token, now=150.0)


def test_the_amplification_limit_counts_the_request_low_and_the_reply_high() -> None:
    # A 60-byte payload is at least a datagram of 60 - slack + the smallest envelope; its reply may
    # encode to at most 3x that, less the reply's own header and envelope.
    allowed = max(n for n in range(1000) if within_amplification_limit(60, n))
    assert allowed == 3 * (60 - REENCODING_SLACK + MIN_REQUEST_OVERHEAD) - MAX_REPLY_OVERHEAD
    assert not within_amplification_limit(60, allowed + 1)
    for reply in range(0, 3000, 7):
        smallest = smallest_request_for(reply)
        assert within_amplification_limit(smallest, reply)
        assert not within_amplification_limit(smallest - 1, reply)
