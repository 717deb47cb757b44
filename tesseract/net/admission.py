"""Which connections a stream server keeps: a cap per source address and a cap in all. Sans-IO.

A new connection from an address that has its share already is refused: a flood from one address
never disturbs anyone, not even that address's established connections. A new connection that would
exceed the cap in all sheds the newest *idle* connection (nothing in flight, no frame begun) to make
room, and is refused only when none is idle. Shedding the newest rather than the oldest keeps the
long-lived pooled connections of regular clients and lets a newcomer in even while the table is full
of idle connections; a connection that is working is never shed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

C = TypeVar("C")


class Decision(NamedTuple, Generic[C]):
    admitted: bool
    shed: list[C]  # connections to close, now, to make room


class Admission(Generic[C]):
    def __init__(self, max_total: int, max_per_source: int, *, idle: Callable[[C], bool]) -> None:
        if max_total < 1 or max_per_source < 1:
            raise ValueError(f"connection caps must be positive, got {max_total} and {max_per_source}")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._idle = idle
        self._all: dict[C, str] = {}  # connection -> source, oldest first
        self._by_source: dict[str, int] = {}  # source -> connections

    def __len__(self) -> int:
        return len(self._all)

    def count(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def admit(self, connection: C, source: str) -> Decision[C]:
        """Admit ``connection`` from ``source``, or refuse it; ``shed`` lists what to close for room."""
        if self.count(source) >= self.max_per_source:
            return Decision(False, [])
        shed: list[C] = []
        if len(self._all) >= self.max_total:
            victim = self._newest_idle()
            if victim is None:
                return Decision(False, [])
            self.remove(victim)
            shed.append(victim)
        self._all[connection] = source
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return Decision(True, shed)

    def remove(self, connection: C) -> None:
        """Forget ``connection`` (closed, or shed); a connection not held is ignored."""
        source = self._all.pop(connection, None)
        if source is None:
            return
        count = self._by_source[source] - 1
        if count:
            self._by_source[source] = count
        else:
            del self._by_source[source]

    def _newest_idle(self) -> C | None:
        for connection in reversed(self._all):
            if self._idle(connection):
                return connection
        return None
