"""Training a model with remote mixture layers: the same loop over real sockets and in the simulator.

``Trainer.work()`` yields the loop as small synchronous units (one training step, one evaluation).
``run()`` calls them one after the other (plain torch code, a ``Client`` with its own loop);
``run_async()`` runs each through ``client.host.compute``, which is how the simulator gives torch
code and the network turns. A step whose experts all fail is skipped and counted, never fatal:
the swarm is expected to fail now and then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch
import trio
from torch import nn
from tqdm import tqdm

from tesseract.client.averaging import ParameterAverager
from tesseract.client.errors import ExpertError, MixtureError, SequenceError
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.client.session import Client
from tesseract.train.data import Dataset

logger = logging.getLogger(__name__)

#: The progress line (and the live bar on a terminal): the same fields either way.
PROGRESS_FORMAT = "{desc} |{bar:24}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    #: Log a progress line every this many steps (0: only at the end of each epoch).
    log_every: int = 10
    max_steps: int | None = None
    #: A failed step waits before the next one, doubling from ``retry_delay`` up to ``max_retry_delay``
    #: (experts come back, new ones are found when the routing cache expires) ...
    retry_delay: float = 0.1
    max_retry_delay: float = 5.0
    #: ... and this many failed steps in a row end the run with ``TrainingStalled``.
    max_consecutive_failures: int = 30
    #: With an averager: start a round of averaging the model's own parameters with other trainers
    #: every this many steps (0: never) ...
    average_every: int = 0
    #: ... and at the end, keep averaging (without training) this many seconds, so trainers that
    #: finish at different times end on the same parameters.
    average_settle: float = 0.0
    #: Steps under way at once (``run_async`` only): each computes its gradients on a copy of the
    #: parameters it started from and applies them when it ends, so a trainer keeps the swarm busy
    #: while its requests cross the network (stale updates, as asynchronous trainers have).
    steps_in_flight: int = 1


@dataclass
class TrainState:
    steps: int = 0
    samples: int = 0
    failed_steps: int = 0
    train_time: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per completed step
    test_accuracy: list[float] = field(default_factory=list)  # one per epoch
    test_steps: list[int] = field(default_factory=list)  # the steps taken when each was measured
    last_error: str = ""
    consecutive_failures: int = 0
    #: (time, samples) when the first and the latest successful step ended, by the client's clock.
    first_finished: tuple[float, int] | None = None
    last_finished: tuple[float, int] | None = None
    steps_at_first: int = 0


def _done() -> None:
    """A unit whose work is done: ``host.compute(_done, flops=...)`` only charges its cost."""


class TrainingStalled(RuntimeError):
    """Too many steps in a row failed: the swarm cannot serve this model now."""


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        client: Client,
        config: TrainConfig | None = None,
        *,
        report: Callable[[str], None] = print,
        live_progress: TextIO | None = None,
        averager: ParameterAverager | None = None,
    ) -> None:
        """``report`` takes the progress and epoch lines. ``live_progress``: a terminal to draw one
        live progress bar on instead of progress lines (epoch lines are printed above it).
        ``averager``: averages the model's own parameters with other trainers' (``average_every``)."""
        self.model = model
        self.averager = averager
        self.data = data
        self.client = client
        self.config = config or TrainConfig()
        self.report = report
        self.live_progress = live_progress
        self._bar: tqdm | None = None
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.config.learning_rate)
        self.state = TrainState()
        self.mixtures = [m for m in model.modules() if isinstance(m, RemoteMixtureOfExperts)]
        self._generator = torch.Generator().manual_seed(self.config.seed)

    # ----- drivers ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        for unit, _ in self.work():
            unit()
        return self.summary()

    async def run_async(self) -> dict[str, Any]:
        units = self.work()
        host = self.client.host

        async def drain() -> None:
            for unit, flops in units:  # each task takes the next unit: the steps overlap, in order
                await host.compute(unit)
                # The unit's local arithmetic, charged apart: a unit that waits on the network (through
                # the bridge) must run with no flops given (see ``Host.compute``).
                if flops:
                    await host.compute(_done, flops=flops)

        if self.config.steps_in_flight <= 1:
            await drain()
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.steps_in_flight):
                    nursery.start_soon(drain)
        return self.summary()

    # ----- the loop -----------------------------------------------------------------------------

    def work(self) -> Iterator[tuple[Callable[[], None], float]]:
        """The loop as units: (run it, the flops of its local arithmetic)."""
        config, data = self.config, self.data
        # Forward flops per sample of the local layers (two per weight); a step is about three times
        # a forward (forward, and backward to inputs and weights).
        per_sample = 2.0 * sum(p.numel() for p in self.model.parameters())
        steps_per_epoch = -(-len(data.train_y) // config.batch_size)
        total = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        issued = 0  # steps handed out: done, failed, or (with steps in flight) under way
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(data.train_y), generator=self._generator)
            for start in range(0, len(order), config.batch_size):
                if issued >= total:
                    break
                rows = order[start : start + config.batch_size]
                issued += 1
                yield (
                    lambda rows=rows: self._train_step(data.train_x[rows], data.train_y[rows]),
                    3 * per_sample * len(rows),
                )
                done = self.state.steps + self.state.failed_steps
                if config.log_every and done % config.log_every == 0:
                    self._progress(epoch, done, total)
            finished = issued >= total or epoch == config.epochs
            if finished and self.averager is not None and config.average_settle > 0:
                yield (lambda: self.averager.settle(config.average_settle)), 0.0
            if len(data.test_y):  # a data set without a test split (synthetic) has nothing to measure
                yield (lambda epoch=epoch: self._evaluate_epoch(epoch, total)), per_sample * len(data.test_y)
            if finished:
                break
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        started = self.client.now()
        if self.averager is not None:
            self.averager.apply_pending()  # between steps: never under the optimizer's feet
        self.model.train()
        try:
            if self.config.steps_in_flight > 1:
                loss, grads = self._gradients_on_a_copy(x, y)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(self.model(x), y)
                loss.backward()
        except (MixtureError, ExpertError, SequenceError) as exc:
            self._step_failed(exc)
            return
        self.state.consecutive_failures = 0
        if self.config.steps_in_flight > 1:
            for parameter, grad in zip(self.model.parameters(), grads, strict=True):
                parameter.grad = grad
        self.optimizer.step()
        self.state.steps += 1
        self.state.samples += len(y)
        self.state.losses.append(float(loss.detach()))
        now = self.client.now()
        self.state.train_time += now - started
        if self.state.first_finished is None:
            self.state.first_finished = (now, self.state.samples)
            self.state.steps_at_first = self.state.steps
        self.state.last_finished = (now, self.state.samples)
        every = self.config.average_every
        if self.averager is not None and every and self.state.steps % every == 0:
            self.averager.request_round()

    def _gradients_on_a_copy(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The loss and the parameters' gradients, computed on a copy of the parameters: other
        steps may update the model in place while this one waits for the network, which autograd
        would refuse on tensors it saved."""
        names = [name for name, _ in self.model.named_parameters()]
        copies = {
            name: p.detach().clone().requires_grad_(p.requires_grad)
            for name, p in self.model.named_parameters()
        }
        logits = torch.func.functional_call(self.model, copies, (x,))
        loss = nn.functional.cross_entropy(logits, y)
        wanted = [copies[name] for name in names]
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        return loss, list(grads)

    def _step_failed(self, error: Exception) -> None:
        state, config = self.state, self.config
        state.failed_steps += 1
        state.consecutive_failures += 1
        state.last_error = str(error)
        if state.consecutive_failures >= config.max_consecutive_failures:
            raise TrainingStalled(f"{state.consecutive_failures} steps in a row failed; the last: {error}")
        delay = min(config.retry_delay * 2 ** (state.consecutive_failures - 1), config.max_retry_delay)
        logger.warning("step skipped, next try in %.2gs: %s", delay, error)
        self.client.run(trio.sleep, delay)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
        """Accuracy on ``x, y``; a batch whose experts all fail counts as wrong (and is logged)."""
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                try:
                    logits = self.model(x[start : start + batch_size])
                except (MixtureError, ExpertError, SequenceError) as exc:
                    logger.warning("evaluation batch failed: %s", exc)
                    continue
                correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
        return correct / max(1, len(y))

    def _evaluate_epoch(self, epoch: int, total: int) -> None:
        if self.averager is not None:
            self.averager.apply_pending()
        accuracy = self.evaluate(self.data.test_x, self.data.test_y)
        self.state.test_accuracy.append(accuracy)
        self.state.test_steps.append(self.state.steps)
        recent = self.state.losses[-20:]
        loss = sum(recent) / len(recent) if recent else float("nan")
        line = (
            f"epoch {epoch}: test accuracy {accuracy:.4f}, train loss {loss:.4f}, "
            f"{self.state.steps} steps, {self.failed_calls()} failed expert calls"
        )
        if self._bar is not None:
            self._bar.write(line, file=self.live_progress)
        else:
            self.report(line)

    def _progress(self, epoch: int, done: int, total: int) -> None:
        recent = self.state.losses[-10:]
        loss = sum(recent) / len(recent) if recent else float("nan")
        info = f"loss {loss:.4f}, {self.samples_per_s():.0f} samples/s, {self.failed_calls()} failed calls"
        if self.live_progress is None:
            line = tqdm.format_meter(
                done,
                total,
                self.state.train_time,
                prefix=f"epoch {epoch}",
                postfix=info,
                bar_format=PROGRESS_FORMAT,
                ascii=True,
            )
            self.report(line)
            return
        if self._bar is None:
            self._bar = tqdm(total=total, file=self.live_progress, bar_format=PROGRESS_FORMAT, ascii=True)
        self._bar.set_description_str(f"epoch {epoch}", refresh=False)
        self._bar.set_postfix_str(info, refresh=False)
        self._bar.update(done - self._bar.n)

    # ----- results ------------------------------------------------------------------------------

    def failed_calls(self) -> int:
        return sum(m.stats["forward_failures"] + m.stats["backward_failures"] for m in self.mixtures)

    def samples_per_s(self) -> float:
        return self.state.samples / self.state.train_time if self.state.train_time > 0 else 0.0

    def steady_samples_per_s(self) -> float | None:
        """Samples per second from the first finished step to the latest: the steady state, with
        the pipeline's filling left out (until the first step ends, nothing can). None until as
        many steps as run at once have ended after the first."""
        first, last = self.state.first_finished, self.state.last_finished
        if first is None or last is None or last[0] <= first[0]:
            return None
        # Steps under way at once end close together: a rate over fewer ends than that is noise.
        if self.state.steps - self.state.steps_at_first < self.config.steps_in_flight:
            return None
        return (last[1] - first[1]) / (last[0] - first[0])

    def summary(self) -> dict[str, Any]:
        calls = sum(m.stats["forward_calls"] + m.stats["backward_calls"] for m in self.mixtures)
        return {
            # None: no test pass ran (a data set without a test split, or no epoch ended).
            "final_test_accuracy": self.state.test_accuracy[-1] if self.state.test_accuracy else None,
            "test_accuracy_per_epoch": self.state.test_accuracy,
            "steps": self.state.steps,
            "failed_steps": self.state.failed_steps,
            "samples_per_s": self.samples_per_s(),
            "failed_calls": self.failed_calls(),
            "expert_calls": calls,
            "first_loss": self.state.losses[0] if self.state.losses else None,
            "final_loss": sum(self.state.losses[-20:]) / max(1, len(self.state.losses[-20:])),
            "last_error": self.state.last_error,
            "averaging": dict(self.averager.stats) if self.averager is not None else {},
        }
