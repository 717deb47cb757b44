"""A scenario's members (one per simulated node, across its sessions) and what their roles are
given to run with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from simulator.host import SimHost
from simulator.scenario.metrics import Recorder
from simulator.scenario.schema import Group


@dataclass
class Member:
    """One node of a group, across its sessions (a restart is a new process on the same host)."""

    group: Group
    index: int
    host: SimHost
    region: str | None
    alive: bool = False
    ready: bool = False  # its services are up (a DHT node joined, a server announced)
    started: bool = False  # it has had a session (a member waiting for its start has not)
    trained: bool = False  # a trainer that has taken its steps in this session
    session_started: float = 0.0
    stopped: trio.Event = field(default_factory=trio.Event)
    #: The running part of its code, after its services started: cancelled to leave gracefully.
    body: trio.CancelScope = field(default_factory=trio.CancelScope)
    services: dict[str, Any] = field(default_factory=dict)
    #: Counters carried over from earlier sessions (a restart starts its objects from zero).
    carried: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.index}"


@dataclass(frozen=True)
class RoleContext:
    """What a member's role needs of the run: seeds, where to keep checkpoints, where to record."""

    seed: int
    #: The scenario file's directory: relative paths in it (a data set) start there.
    base_dir: Path
    work_dir: Path
    recorder: Recorder
    families: frozenset[str]
    interval: float
    #: Called when a trainer has taken its steps (the run may end, or its next phase start).
    on_trained: Callable[[Member], None] = lambda member: None


__all__ = ["Member", "RoleContext"]
