"""Virtual time for trio: a clock that moves only when the simulator's pump jumps it.

trio's ``MockClock`` with rate 0 reads the real clock on every ``current_time()`` and scales the
offset by zero; a simulation asks for the time millions of times, so this clock just keeps the
number. The values are the same floats (the sum of the jumps), so traces do not change.
"""

from __future__ import annotations

import trio

#: What trio sleeps for when nothing is due: never, in practice (the pump is always waiting).
_NEVER = 999_999_999.0


class VirtualClock(trio.abc.Clock):
    __slots__ = ("_now",)

    def __init__(self) -> None:
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self._now else _NEVER

    def jump(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
