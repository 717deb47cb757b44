"""The real host's process-wide settings: descriptors raised to the hard limit, and freed memory kept
for reuse but given back once it piles up (defects 2 and 13)."""

from __future__ import annotations

import os
import resource

import numpy
import pytest
import trio

from tesseract.net import real
from tesseract.net.real import RealHost

MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_memory_beyond_the_allowance_goes_back_to_the_system() -> None:
    real.keep_freed_memory_for_reuse()
    if not real._allocator_tuned:
        pytest.skip("allocator tuning is off here (not glibc, or TESSERACT_MALLOC_TUNING=0)")
    real.release_freed_memory(0)
    before = rss()
    # An attack's peak: large buffers among small live objects, which no trim threshold reaches.
    large, small = [], []
    for _ in range(12):
        buffer = numpy.empty(32 * MiB, dtype=numpy.uint8)
        buffer.fill(1)
        large.append(buffer)
        small.append(bytearray(4000))
    assert rss() - before >= 300 * MiB
    large.clear()
    assert real.freed_memory_kept() >= 300 * MiB  # kept for reuse...
    assert real.release_freed_memory()  # ...until a quiet spell
    assert rss() - before < 64 * MiB


def test_freed_memory_goes_back_after_a_quiet_period_once_per_burst() -> None:
    policy = real.QuietRelease(count=10)
    assert not policy.due(10)  # nothing happened since the start
    assert not policy.due(25)  # large buffers allocated during this period: traffic goes on
    assert not policy.due(40)
    assert policy.due(40)  # a quiet period after them
    assert not policy.due(40)  # given back already; nothing to give again
    assert not policy.due(41)
    assert policy.due(41)


def test_a_real_host_raises_its_descriptor_limit_and_caps_its_streams_below_it() -> None:
    async def main() -> None:
        async with RealHost.open() as host:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if hard != resource.RLIM_INFINITY:
                assert soft == hard
            streams = host.transport.max_streams
            assert streams is not None and streams <= soft - real.DESCRIPTOR_RESERVE

    trio.run(main)
