"""Task pools and the batching policy, without I/O.

Requests for the same expert and kind (forward or backward) wait in one pool. The runtime always
serves the pool whose oldest waiting request has waited longest, and takes from it, oldest first,
as many whole requests as fit in ``max_batch_size`` rows. A request is never split: one larger than
the limit is refused when submitted.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from tesseract.runtime.errors import InvalidBatch

FORWARD, BACKWARD = "forward", "backward"


class Task:
    """One request's rows, waiting for its batch; the runtime fills ``outputs`` or ``error``."""

    __slots__ = ("arrival", "cancelled", "error", "event", "outputs", "rows", "tensors")

    def __init__(self, tensors: list[torch.Tensor], rows: int, arrival: float, event: Any) -> None:
        self.tensors = tensors
        self.rows = rows
        self.arrival = arrival
        self.event = event  # set when the task is finished, one way or the other
        self.outputs: list[torch.Tensor] | None = None
        self.error: BaseException | None = None
        self.cancelled = False  # the caller stopped waiting: skip it


class TaskPool:
    def __init__(self, uid: str, kind: str, max_batch_size: int) -> None:
        self.uid = uid
        self.kind = kind
        self.max_batch_size = max_batch_size
        self.tasks: deque[Task] = deque()

    def __len__(self) -> int:
        return len(self.tasks)

    def check(self, task: Task) -> None:
        if task.rows > self.max_batch_size:
            raise InvalidBatch(f"a request of {task.rows} rows exceeds max_batch_size {self.max_batch_size}")

    def submit(self, task: Task) -> None:
        self.check(task)
        self.tasks.append(task)

    def oldest_arrival(self) -> float | None:
        while self.tasks and self.tasks[0].cancelled:
            self.tasks.popleft()
        return self.tasks[0].arrival if self.tasks else None

    def take_batch(self) -> list[Task]:
        """Oldest first, whole requests, at most ``max_batch_size`` rows (at least one request)."""
        batch: list[Task] = []
        rows = 0
        while self.tasks:
            task = self.tasks[0]
            if task.cancelled:
                self.tasks.popleft()
                continue
            if batch and rows + task.rows > self.max_batch_size:
                break
            batch.append(self.tasks.popleft())
            rows += task.rows
        return batch


def pick_pool(pools: list[TaskPool]) -> TaskPool | None:
    """The pool whose oldest live request arrived first (ties: the first such pool)."""
    best: TaskPool | None = None
    best_arrival = float("inf")
    for pool in pools:
        arrival = pool.oldest_arrival()
        if arrival is not None and arrival < best_arrival:
            best, best_arrival = pool, arrival
    return best
