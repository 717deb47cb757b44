"""A budget for the bytes that unfinished frames hold, shared by all connections of a server (or client).

A frame's buffer grows as its bytes arrive (``FrameDecoder``), so its memory follows what the peer
sends rather than what its header claims. The budget bounds the sum over connections: a connection
whose frame needs more than is left waits, and reads nothing meanwhile, so TCP slows its sender down.
Waiting, rather than closing, keeps honest peers that merely arrive together working: their frames
complete one after another instead of failing.

The oldest unfinished frame never waits. Whatever the others hold, one frame can always complete, so
frames that wait for each other cannot deadlock; the cost is that the bytes held may exceed ``limit``
by one frame (at most ``max_frame_size``). A frame that never completes is ended by its deadline
(``FrameReader``), which releases what it held.
"""

from __future__ import annotations

import trio


class BufferBudget:
    """``limit`` bytes shared by holders (frame readers); holders keep the order their frames began in."""

    __slots__ = ("_held", "_waiters", "limit", "peak", "used")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a buffer budget cannot be negative, got {limit}")
        self.limit = limit
        self.used = 0
        #: The most bytes ever held at once, for tests and status lines.
        self.peak = 0
        self._held: dict[object, int] = {}  # holder -> bytes, oldest frame first
        self._waiters = trio.lowlevel.ParkingLot()

    def held(self, holder: object) -> int:
        return self._held.get(holder, 0)

    @property
    def waiting(self) -> int:
        """How many holders wait for bytes now."""
        return len(self._waiters)

    def try_acquire(self, holder: object, count: int) -> bool:
        """Take ``count`` more bytes for ``holder`` if they fit, or if it holds the oldest frame."""
        if count <= 0:
            return True
        if self.used + count > self.limit and not self._is_oldest(holder):
            return False
        self._held[holder] = self._held.get(holder, 0) + count
        self.used += count
        self.peak = max(self.peak, self.used)
        return True

    async def acquire(self, holder: object, count: int) -> None:
        """Take ``count`` more bytes for ``holder``, waiting until others release enough."""
        while not self.try_acquire(holder, count):
            await self.wait()

    async def wait(self) -> None:
        """Wait until bytes are released (or ``wake_all``): the moment to try again."""
        await self._waiters.park()

    def wake_all(self) -> None:
        self._waiters.unpark_all()

    def release(self, holder: object, count: int | None = None) -> None:
        """Give back ``count`` bytes of ``holder``'s (all of them by default)."""
        held = self._held.get(holder, 0)
        count = held if count is None else min(count, held)
        if count <= 0:
            return
        if count == held:
            del self._held[holder]  # its next frame queues up behind the frames begun meanwhile
        else:
            self._held[holder] = held - count
        self.used -= count
        if self._waiters:
            self._waiters.unpark_all()

    def _is_oldest(self, holder: object) -> bool:
        for oldest in self._held:
            return oldest is holder
        return True
