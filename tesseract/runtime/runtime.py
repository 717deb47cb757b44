"""The runtime: one loop per device that turns task pools into batches and batches into compute.

``submit`` is what a server's request handler awaits; ``run`` is the loop. Every batch goes through
``host.compute`` (a worker thread on a real host, virtual time in the simulator), so the event loop
keeps serving the network while an expert computes, and new requests pile up into the next batch.
A backward batch answers with the input gradients first; the loop applies the optimizer step once
nothing else waits (or the expert's next batch applies it first), off the client's round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import trio

from tesseract.net.host import Host
from tesseract.runtime.backend import ExpertBackend
from tesseract.runtime.errors import BatchFailed
from tesseract.runtime.pool import BACKWARD, FORWARD, Task, TaskPool, pick_pool

logger = logging.getLogger(__name__)


@dataclass
class ExpertStats:
    requests: int = 0
    samples: int = 0
    batches: int = 0
    queue_wait_s: float = 0.0  # summed over requests: arrival to the start of their batch
    compute_s: float = 0.0  # summed over batches

    @property
    def mean_batch_size(self) -> float:
        return self.samples / self.batches if self.batches else 0.0

    @property
    def mean_queue_wait_s(self) -> float:
        return self.queue_wait_s / self.requests if self.requests else 0.0


class Runtime:
    def __init__(self, host: Host, backends: Iterable[ExpertBackend]) -> None:
        self.host = host
        self.backends = {backend.uid: backend for backend in backends}
        self.pools = {
            (uid, kind): TaskPool(uid, kind, backend.max_batch_size)
            for uid, backend in self.backends.items()
            for kind in (FORWARD, BACKWARD)
        }
        self.stats = {(uid, kind): ExpertStats() for uid, kind in self.pools}
        #: Called with (uid, kind, row count of each request) after every batch computes: for
        #: metrics and traces (a batch-size histogram, or replaying the exact batches).
        self.on_batch: Callable[[str, str, list[int]], None] | None = None
        #: Pools that got requests since they were last emptied, in that order: the loop looks at
        #: these only, so a request costs the same on a server of one expert or of a thousand.
        self._waiting: dict[TaskPool, None] = {}
        #: Backends whose last backward left an optimizer step to apply, in order.
        self._unstepped: dict[str, ExpertBackend] = {}
        self._wakeup = trio.Event()
        #: Held while a batch computes: the loop's batches and the idle fast path take turns on it.
        self._device = trio.Lock()

    async def submit(self, uid: str, kind: str, tensors: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
        """Queue one request's rows and wait for its share of the batch's outputs."""
        task = Task(tensors, rows, trio.current_time(), trio.Event())
        pool = self.pools[(uid, kind)]
        if self._idle():
            # Nothing waits and nothing computes: run this request now, in the caller's task, saving
            # the hand-off to the loop's task and back (a large share of a small request's latency).
            pool.check(task)
            self._device.acquire_nowait()
            try:
                await self._run_batch(pool, [task])
            finally:
                self._device.release()
                if self._unstepped or self._waiting:
                    self._wakeup.set()
        else:
            pool.submit(task)
            self._waiting[pool] = None
            self._wakeup.set()
            try:
                await task.event.wait()
            except BaseException:
                task.cancelled = True  # its deadline passed, or the client left: not worth computing
                raise
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._waiting and not self._unstepped:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            async with self._device:
                # Chosen once the device is ours, so requests that came meanwhile join the batch.
                pool = pick_pool(list(self._waiting))
                if pool is None:
                    self._waiting.clear()  # what they held was cancelled
                    await self._apply_steps()  # nothing waits: now the deferred optimizer steps
                    continue
                batch = pool.take_batch()
                if not pool:
                    del self._waiting[pool]
                await self._run_batch(pool, batch)

    async def settle(self) -> None:
        """Wait for the device, then apply every pending optimizer step (to read the weights)."""
        async with self._device:
            await self._apply_steps()

    async def _apply_steps(self) -> None:
        # An expert's next batch applies its pending step itself: those need no call here.
        backends = [backend for backend in self._unstepped.values() if backend.step_pending]
        self._unstepped.clear()
        if not backends:
            return

        def apply() -> None:
            for backend in backends:
                backend.apply_step()

        try:
            await self.host.compute(apply, flops=sum(backend.step_flops() for backend in backends))
        except Exception:
            logger.exception("optimizer steps of %s failed", [backend.uid for backend in backends])

    def _idle(self) -> bool:
        return not self._device.locked() and not self._waiting

    async def _run_batch(self, pool: TaskPool, batch: list[Task]) -> None:
        backend = self.backends[pool.uid]
        stats = self.stats[(pool.uid, pool.kind)]
        started = trio.current_time()
        rows = [task.rows for task in batch]
        total = sum(rows)
        try:
            columns = [
                torch.cat(parts) if len(parts) > 1 else parts[0]
                for parts in zip(*(t.tensors for t in batch), strict=True)
            ]
            if pool.kind == FORWARD:
                outputs = await self.host.compute(
                    backend.forward, columns, flops=backend.flops(FORWARD, total)
                )
            else:
                count = len(backend.schema.inputs)
                outputs = await self.host.compute(
                    backend.compute_gradients,
                    columns[:count],
                    columns[count:],
                    flops=backend.flops(BACKWARD, total),
                )
                self._unstepped[backend.uid] = backend
        except Exception as exc:
            logger.exception("%s %s of %d rows failed", pool.uid, pool.kind, total)
            error = BatchFailed(f"{pool.uid} {pool.kind} failed: {type(exc).__name__}: {exc}")
            for task in batch:
                task.error = error
                task.event.set()
            return
        finished = trio.current_time()
        stats.batches += 1
        stats.requests += len(batch)
        stats.samples += total
        stats.compute_s += finished - started
        stats.queue_wait_s += sum(started - task.arrival for task in batch)
        if self.on_batch is not None:
            self.on_batch(pool.uid, pool.kind, rows)
        if len(batch) == 1:  # most requests under light load: nothing to split
            batch[0].outputs = outputs
            batch[0].event.set()
            return
        pieces = [torch.split(output, rows) for output in outputs]
        for index, task in enumerate(batch):
            task.outputs = [piece[index] for piece in pieces]
            task.event.set()
