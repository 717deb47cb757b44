"""One task enforcing many connections' deadlines (``Watchdog``): each expires once, at most a tick late."""

from __future__ import annotations

import math

import trio
import trio.testing

from tesseract.net.watchdog import Watchdog, shared_watchdog, tick_for


class Item:
    def __init__(self, when: float, expired: list) -> None:
        self.when = when
        self.expired = expired

    def deadline(self) -> float:
        return self.when

    def expire(self) -> None:
        self.expired.append((self, trio.current_time()))


class Broken(Item):
    def expire(self) -> None:
        raise RuntimeError("an item whose expiry fails")


def test_items_expire_once_when_their_deadline_passes() -> None:
    async def main() -> None:
        expired: list = []
        watchdog = Watchdog(1.0)
        soon, later, never = Item(5.0, expired), Item(10.0, expired), Item(math.inf, expired)
        for item in (soon, later, never):
            watchdog.watch(item)
        assert watchdog.check(4.9) == []
        assert watchdog.check(5.0) == [soon]
        later.when = 20.0  # deadlines move (a request came in): the new one counts
        assert watchdog.check(15.0) == []
        watchdog.forget(later)
        broken = Broken(1.0, expired)
        watchdog.watch(broken)
        assert watchdog.check(1e9) == [broken]  # its failure is logged, and stops nobody else
        assert [item for item, _ in expired] == [soon]

    trio.run(main)


def test_the_runs_watchdog_enforces_deadlines_at_most_a_tick_late() -> None:
    async def main() -> None:
        expired: list = []
        watchdog = shared_watchdog(2.0)
        assert shared_watchdog(5.0) is watchdog and watchdog.tick == 2.0
        watchdog.watch(Item(3.2, expired))
        await trio.sleep(1.0)
        watchdog.shorten_tick(0.5)  # a server with shorter timeouts: the current wait shortens too
        watchdog.watch(Item(1.7, expired))
        await trio.sleep(10)
        assert [round(item.when, 1) for item, _ in expired] == [1.7, 3.2]
        assert all(item.when <= when <= item.when + 0.5 for item, when in expired)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_tick_follows_the_shortest_timeout_within_bounds() -> None:
    assert tick_for(30.0, 300.0) == 5.0
    assert tick_for(1.0) == 0.25
    assert tick_for(0.01) == 0.05
