"""Many expert calls at once, with the mixture's patience rules.

Every expert gets one request carrying all the rows routed to it, all in parallel. The wait ends
when every sample has ``k_min`` answers (or every call has finished), plus at most
``timeout_after_k_min`` for stragglers, and never later than ``timeout``. What did not answer by
then is cancelled and reported as failed, with its reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import torch
import trio

from tesseract.client.errors import ExpertError


class Job(NamedTuple):
    """One expert's share of a batch: which rows of the input, in which of each row's k slots."""

    uid: str
    endpoint: str
    rows: torch.Tensor  # int64 row indices into the batch
    slots: torch.Tensor  # int64, the slot of this expert in each of those rows


Call = Callable[[int, Job], Awaitable[list[torch.Tensor]]]


async def call_many(
    jobs: Sequence[Job],
    call: Call,
    *,
    batch_size: int,
    k_min: int,
    timeout: float,
    timeout_after_k_min: float,
    detect_anomalies: bool = False,
) -> tuple[dict[int, list[torch.Tensor]], dict[int, ExpertError]]:
    """Run ``call(index, job)`` for every job; return (answers, failures), both by job index."""
    answers: dict[int, list[torch.Tensor]] = {}
    failures: dict[int, ExpertError] = {}
    needed = [k_min] * batch_size
    state = {"unsatisfied": batch_size if k_min > 0 else 0, "finished": 0}
    enough = trio.Event()  # every sample has k_min answers, or every call is over
    all_done = trio.Event()

    async def run(index: int, job: Job) -> None:
        try:
            tensors = await call(index, job)
            if detect_anomalies and not all(norm_is_finite(t) for t in tensors):
                raise ExpertError(
                    job.uid, job.endpoint, "answered values whose norm overflows", ExpertError.BAD_ANSWER
                )
            answers[index] = tensors
            for row in job.rows.tolist():
                needed[row] -= 1
                if needed[row] == 0:
                    state["unsatisfied"] -= 1
        except ExpertError as exc:
            failures[index] = exc
        finally:
            state["finished"] += 1
            if state["finished"] == len(jobs):
                all_done.set()
            if state["unsatisfied"] == 0 or all_done.is_set():
                enough.set()

    if not jobs:
        return answers, failures
    async with trio.open_nursery() as nursery:
        for index, job in enumerate(jobs):
            nursery.start_soon(run, index, job)
        with trio.move_on_after(timeout) as overall:
            await enough.wait()
            with trio.move_on_after(timeout_after_k_min):
                await all_done.wait()
        nursery.cancel_scope.cancel()
    for index, job in enumerate(jobs):
        if index not in answers and index not in failures:
            if overall.cancelled_caught:
                reason, kind = f"no answer within {timeout:.3g}s", ExpertError.TIMEOUT
            else:
                reason, kind = (
                    f"a straggler, dropped {timeout_after_k_min:.3g}s after k_min",
                    ExpertError.STRAGGLER,
                )
            failures[index] = ExpertError(job.uid, job.endpoint, reason, kind)
    return answers, failures


def norm_is_finite(tensor: torch.Tensor) -> bool:
    """The tensor's 2-norm, in its own dtype, does not overflow (other dtypes always pass)."""
    if not tensor.dtype.is_floating_point:
        return True
    return bool(torch.isfinite(torch.linalg.vector_norm(tensor)))
