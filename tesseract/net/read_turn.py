"""Whose turn it is to read a client connection: nobody, the connection's background task, or a call.

Sans-IO: the state and its transitions only; the stream client wakes the tasks it is told to.

    NOBODY      -- a call starts waiting for its reply -->  that call reads
    NOBODY      -- the background task looks           -->  BACKGROUND reads
    a call      -- it stops waiting (reply in, deadline,
                   cancelled)                          -->  the longest-waiting other call, else NOBODY
    BACKGROUND  -- it stops (the connection ends)      -->  the longest-waiting call, else NOBODY

A call that starts waiting while someone else reads just waits: its reply is routed to it. The
background task never takes the turn from a call (a wake-up per call for nothing). Invariants: exactly
one reader or NOBODY; a reading call is a waiting call; while any call waits, someone reads.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

C = TypeVar("C")


class Reader(enum.Enum):
    NOBODY = "nobody"
    BACKGROUND = "background"


NOBODY = Reader.NOBODY
BACKGROUND = Reader.BACKGROUND


class ReadTurn(Generic[C]):
    """The read hand-off of one connection, over calls of any hashable type ``C``."""

    __slots__ = ("_waiting", "reader")

    def __init__(self) -> None:
        self.reader: C | Reader = NOBODY
        self._waiting: dict[C, None] = {}  # calls waiting for their replies, longest-waiting first

    @property
    def waiting(self) -> list[C]:
        return list(self._waiting)

    def start_waiting(self, call: C) -> bool:
        """``call`` now waits for its reply; True if it is the one to read."""
        if call in self._waiting:
            raise ValueError("this call is already waiting")
        self._waiting[call] = None
        if self.reader is NOBODY:
            self.reader = call
        return self.reader is call

    def stop_waiting(self, call: C) -> C | Reader | None:
        """``call`` waits no more. If it was reading, the turn passes on and the new reader is returned
        (a call to wake, or NOBODY: wake the background task); None if the turn did not move."""
        del self._waiting[call]
        if self.reader is not call:
            return None
        self.reader = next(iter(self._waiting)) if self._waiting else NOBODY
        return self.reader

    def take_background(self) -> bool:
        """The background task reads if nobody does; True if it is the one to read."""
        if self.reader is NOBODY:
            self.reader = BACKGROUND
        return self.reader is BACKGROUND

    def background_stopped(self) -> C | None:
        """The background task reads no more; returns the call that reads instead, if one waits."""
        if self.reader is not BACKGROUND:
            return None
        self.reader = next(iter(self._waiting), NOBODY)
        return None if self.reader is NOBODY else self.reader  # type: ignore[return-value]
