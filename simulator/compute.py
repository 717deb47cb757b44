"""Compute in virtual time: the cost model and the hand-off between a worker thread and the trio loop.

``SimHost.compute(fn)`` runs ``fn`` in a worker thread while the calling task blocks the trio loop
synchronously, so virtual time stands still and exactly one of them runs at any moment. If ``fn``
calls ``bridge.run``, the worker posts the call to the blocked task, which awaits it in virtual time
(other tasks run meanwhile) and hands the result back.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import outcome
import trio

from tesseract.concurrency import leave_signals_to_the_main_thread
from tesseract.net.host import Bridge

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceProfile:
    """The simulator's cost model for ``host.compute``: virtual seconds = overhead + flops / speed."""

    flops_per_s: float = 1e12
    overhead_s: float = 20e-6

    def cost(self, flops: float) -> float:
        return self.overhead_s + flops / self.flops_per_s


class SimBridge(Bridge):
    """Lets code inside ``SimHost.compute`` call async code, in turn with the trio loop."""

    def __init__(self) -> None:
        self._local = threading.local()

    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            raise RuntimeError(
                "bridge.run is only available inside host.compute(fn) in the simulator, and not in work "
                "announced with flops (that runs on the loop's thread)"
            )
        requests, replies = channel
        requests.put(("call", (async_fn, args)))
        return replies.get().unwrap()

    async def run_in_worker(
        self, fn: Callable[..., T], args: tuple[Any, ...], device: trio.Lock | None = None
    ) -> T:
        """Run ``fn(*args)`` in a worker thread, serving its ``run`` calls, and return its result.
        ``device``, held by the caller, is let go while a ``run`` call is awaited: a step waiting on
        the network leaves the device to other work (another step of the same trainer)."""
        requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        replies: queue.SimpleQueue[outcome.Outcome[Any]] = queue.SimpleQueue()
        local = self._local

        def work() -> Callable[[], None]:
            local.channel = (requests, replies)
            try:
                result = outcome.capture(fn, *args)
            finally:
                local.channel = None
            return lambda: requests.put(("done", result))

        _WORKERS.submit(work)
        while True:
            kind, item = requests.get()  # blocks the loop on purpose: virtual time must not move
            if kind == "done":
                return item.unwrap()
            async_fn, call_args = item
            if device is None:
                replies.put(await outcome.acapture(async_fn, *call_args))
                continue
            device.release()
            try:
                answer = await outcome.acapture(async_fn, *call_args)
            finally:
                # The worker computes again (or the caller unwinds, releasing it): ours again, even
                # when cancelled; whoever holds it now computes without waiting on us.
                with trio.CancelScope(shield=True):
                    await device.acquire()
            replies.put(answer)


class _WorkerPool:
    """Threads for ``run_in_worker``, kept for reuse: a new thread per call cost more than small
    experts' compute. One runs at a time; more exist only while some wait inside ``bridge.run``."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[Callable[[], Callable[[], None]]]] = []
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Callable[[], None]]) -> None:
        """Run ``job`` in an idle thread (or a new one); it returns how to hand its result over, which
        the thread does once it is idle again, so the next call finds it free."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="sim-compute", daemon=True).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], Callable[[], None]]]) -> None:
        leave_signals_to_the_main_thread()  # the loop's thread waits on us, blocked: Ctrl+C must wake it
        while True:
            hand_over = inbox.get()()
            with self._lock:
                self._idle.append(inbox)
            hand_over()
            # It holds the job's result: tensors, or an error whose traceback holds a step's frames
            # (a crashed trainer's whole batch). Kept until the next job, idle threads kept gigabytes.
            del hand_over


_WORKERS = _WorkerPool()
