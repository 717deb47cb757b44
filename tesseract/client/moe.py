"""``RemoteMixtureOfExperts``: a gated mixture whose experts are live servers found through the DHT.

For a batch ``x``: one linear gate per grid dimension scores every coordinate; a beam search over the
DHT's prefix records picks each sample's ``k_best`` best-scored live experts (one DHT round per
dimension for the whole batch, cached briefly); every chosen expert gets one request with all the
rows routed to it, all in parallel (``parallel.call_many``); the output of a sample is the average of
its experts' outputs weighted by a softmax of their gate scores over the experts that answered.
Backward runs the same way: experts that fail contribute no gradient and do not stop the step.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import trio
from torch import nn

from tesseract.client import calls
from tesseract.client.beam_search import ChosenExpert
from tesseract.client.errors import ExpertError, MixtureError
from tesseract.client.expert import DUMMY
from tesseract.client.parallel import Call, Job, call_many
from tesseract.client.routing import ExpertFinder
from tesseract.client.session import Client
from tesseract.dht.experts import UID_DELIMITER, parse_prefix
from tesseract.runtime.schema import TensorSchema

logger = logging.getLogger(__name__)

#: Failures that suggest the expert is gone, broken or far too slow: leave it out of routing a while.
#: A refusal (a typed error reply) says nothing about the next call, so it is not held against it.
COOLDOWN_KINDS = {ExpertError.TIMEOUT, ExpertError.UNREACHABLE, ExpertError.BAD_ANSWER, ExpertError.STRAGGLER}


class RemoteMixtureOfExperts(nn.Module):
    """A mixture-of-experts layer over the swarm; see the module docstring.

    ``k_min``: answers each sample needs from its forward calls; ``timeout_after_k_min``: how long to
    wait for the other experts once every sample has them; ``backward_k_min``/``backward_timeout``:
    the same for backward. ``allow_zero_outputs``: a sample that gets too few answers goes on with
    what it got (zeros if nothing) instead of raising. ``detect_anomalies``: an expert that answers
    NaN or inf counts as failed. ``failure_cooldown``: seconds an expert that timed out, straggled,
    could not be reached or answered nonsense is left out of routing (a refusal is not held against it).
    """

    def __init__(
        self,
        *,
        in_features: int,
        grid_size: Sequence[int],
        uid_prefix: str,
        client: Client,
        k_best: int,
        k_min: int = 1,
        forward_timeout: float = 30.0,
        timeout_after_k_min: float = 1.0,
        backward_k_min: int = 1,
        backward_timeout: float = 30.0,
        allow_zero_outputs: bool = False,
        detect_anomalies: bool = False,
        beam_size: int | None = None,
        cache_ttl: float = 10.0,
        failure_cooldown: float = 10.0,
    ) -> None:
        super().__init__()
        if not grid_size or any(size < 1 for size in grid_size):
            raise ValueError(f"grid_size must be one or more positive sizes, got {list(grid_size)}")
        if not 0 <= k_min <= k_best or not 0 <= backward_k_min <= k_best:
            raise ValueError(
                f"need 0 <= k_min, backward_k_min <= k_best; got {k_min}, {backward_k_min}, {k_best}"
            )
        self.uid_prefix = uid_prefix.rstrip(UID_DELIMITER)
        parse_prefix(self.uid_prefix)
        self.in_features = in_features
        self.grid_size = tuple(grid_size)
        self.client = client
        self.k_best, self.k_min, self.backward_k_min = k_best, k_min, backward_k_min
        self.forward_timeout, self.backward_timeout = forward_timeout, backward_timeout
        self.timeout_after_k_min = timeout_after_k_min
        self.allow_zero_outputs = allow_zero_outputs
        self.detect_anomalies = detect_anomalies
        self.beam_size = beam_size
        self.failure_cooldown = failure_cooldown
        self.proj = nn.Linear(in_features, sum(self.grid_size))
        self.finder = ExpertFinder(client.require_dht(), cache_ttl=cache_ttl)
        #: Calls and failures: forward_calls, forward_failures, backward_calls, backward_failures.
        self.stats: Counter[str] = Counter()
        #: Seconds spent (on the client's clock) routing: the beam search and its DHT rounds.
        self.routing_time = 0.0
        #: The experts chosen for each sample in the last forward, best first (for inspection).
        self.last_routing: list[list[ChosenExpert]] = []
        #: Failure reasons of the last forward and backward, uid -> reason.
        self.last_failures: dict[str, str] = {}
        self._output_schema: TensorSchema | None = None
        self._cooldown: dict[str, float] = {}  # uid -> loop time until which it is left out

    # ----- forward ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self._flatten(x)
        logits = self.proj(flat).split(self.grid_size, dim=-1)
        outputs, alive, coordinates = self._call_experts(flat, logits)
        return self._mix(self._gate_weights(logits, alive, coordinates), outputs, x.shape[:-1])

    async def forward_async(self, x: torch.Tensor) -> torch.Tensor:
        """The same mixture without autograd, for trio code (inference): ``await moe.forward_async(x)``."""
        with torch.no_grad():
            flat = self._flatten(x)
            logits = self.proj(flat).split(self.grid_size, dim=-1)
            self.last_routing = await self._route([part.to("cpu", torch.float64) for part in logits])
            jobs, coordinates, present = self._plan(self.last_routing, len(flat))
            outputs, answered, _ = await self._gather(jobs, flat)
            alive = answered & present
            return self._mix(self._gate_weights(logits, alive, coordinates), outputs, x.shape[:-1])

    @staticmethod
    def _gate_weights(
        logits: Sequence[torch.Tensor], alive: torch.Tensor, coordinates: torch.Tensor
    ) -> torch.Tensor:
        """Softmax of the chosen experts' gate scores over those that answered (zeros where none did)."""
        gate = sum(part.gather(1, coordinates[:, :, d]) for d, part in enumerate(logits))
        any_alive = alive.any(dim=1, keepdim=True)
        gate = gate.masked_fill(~alive & any_alive, float("-inf")).masked_fill(~any_alive, 0.0)
        return torch.softmax(gate, dim=1) * alive

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected inputs with {self.in_features} features, got shape {list(x.shape)}")
        return x.reshape(-1, self.in_features)

    def _call_experts(
        self, flat: torch.Tensor, logits: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route, call, gather: outputs ``[batch, k, ...]``, which slots answered, their coordinates."""
        scores = [part.detach().to("cpu", torch.float64) for part in logits]
        self.last_routing = self.client.run(self._route, scores)
        jobs, coordinates, present = self._plan(self.last_routing, len(flat))
        outputs, answered = _MixtureCall.apply(self, jobs, DUMMY, flat)
        return outputs, answered & present, coordinates

    @staticmethod
    def _mix(weights: torch.Tensor, outputs: torch.Tensor, leading: torch.Size) -> torch.Tensor:
        weights = weights.reshape(*weights.shape, *([1] * (outputs.dim() - 2))).to(outputs.dtype)
        mixed = (weights * outputs).sum(dim=1)
        return mixed.reshape(*leading, *mixed.shape[1:])

    async def _route(self, scores: list[torch.Tensor]) -> list[list[ChosenExpert]]:
        started = trio.current_time()
        self._cooldown = {uid: until for uid, until in self._cooldown.items() if until > started}
        try:
            return await self.finder.find_best(
                self.uid_prefix, scores, self.grid_size, self.k_best, self.beam_size, exclude=self._cooldown
            )
        finally:
            self.routing_time += trio.current_time() - started

    def _plan(
        self, routing: list[list[ChosenExpert]], batch_size: int
    ) -> tuple[list[Job], torch.Tensor, torch.Tensor]:
        """One job per expert; each row's chosen coordinates and which of its k slots are filled."""
        dims = len(self.grid_size)
        filler = [(0,) * dims] * self.k_best
        coordinates = torch.tensor(
            [([e.coordinates for e in experts] + filler)[: self.k_best] for experts in routing],
            dtype=torch.long,
        ).reshape(batch_size, self.k_best, dims)
        present = torch.tensor(
            [[slot < len(experts) for slot in range(self.k_best)] for experts in routing], dtype=torch.bool
        ).reshape(batch_size, self.k_best)
        by_expert: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for row, experts in enumerate(routing):
            for slot, expert in enumerate(experts):
                rows, slots = by_expert.setdefault((expert.uid, expert.endpoint), ([], []))
                rows.append(row)
                slots.append(slot)
        jobs = [
            Job(uid, endpoint, torch.tensor(rows), torch.tensor(slots))
            for (uid, endpoint), (rows, slots) in by_expert.items()
        ]
        return jobs, coordinates, present

    async def _forward_all(
        self, jobs: list[Job], inputs: torch.Tensor
    ) -> tuple[dict[int, list[torch.Tensor]], dict[int, ExpertError]]:
        pieces = _rows_of(inputs, jobs)

        async def call(index: int, job: Job) -> list[torch.Tensor]:
            return await calls.expert_forward(
                self.client, job.uid, job.endpoint, [pieces[index]], self.forward_timeout
            )

        answers, failures = await self._fan_out(jobs, call, len(inputs), self.k_min, self.forward_timeout)
        if self._output_schema is None and jobs:
            self._output_schema = self._learn_output_schema(jobs)
        schema = self._output_schema
        for index, tensors in list(answers.items()):
            if len(tensors) != 1 or (schema is not None and tuple(tensors[0].shape[1:]) != schema.shape):
                del answers[index]
                shapes = [list(t.shape) for t in tensors]
                expected = list(schema.shape) if schema else "?"
                reason = f"answered shapes {shapes}, the mixture expects [rows, {expected}]"
                failures[index] = ExpertError(
                    jobs[index].uid, jobs[index].endpoint, reason, ExpertError.BAD_ANSWER
                )
        self._note("forward", jobs, failures)
        return answers, failures

    async def _gather(
        self, jobs: list[Job], inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[Job]]:
        """Call the experts: their outputs laid out ``[batch, k_best, ...]``, which slots answered,
        and the jobs that did."""
        answers, failures = await self._forward_all(jobs, inputs)
        self._check_enough("forward", self.k_min, jobs, answers, failures, len(inputs))
        schema = self._output_schema
        if schema is None:
            raise MixtureError(
                f"no expert under {self.uid_prefix!r} answered, so the output shape is unknown"
            )
        outputs = torch.zeros(len(inputs), self.k_best, *schema.shape, dtype=schema.torch_dtype)
        answered = torch.zeros(len(inputs), self.k_best, dtype=torch.bool)
        for index, tensors in answers.items():
            job = jobs[index]
            outputs[job.rows, job.slots] = tensors[0]
            answered[job.rows, job.slots] = True
        return outputs, answered, [jobs[index] for index in sorted(answers)]

    def _learn_output_schema(self, jobs: list[Job]) -> TensorSchema | None:
        for job in jobs:
            info = self.client.expert_infos.get((job.uid, job.endpoint))
            if info is not None:
                if len(info.schema.outputs) != 1:
                    raise MixtureError(
                        f"{job.uid} has {len(info.schema.outputs)} outputs; a mixture needs one"
                    )
                return info.schema.outputs[0]
        return None

    def _note(self, kind: str, jobs: list[Job], failures: dict[int, ExpertError]) -> None:
        self.stats[f"{kind}_calls"] += len(jobs)
        self.stats[f"{kind}_failures"] += len(failures)
        if kind == "forward":
            self.last_failures = {}
        until = trio.current_time() + self.failure_cooldown
        for index, error in failures.items():
            job = jobs[index]
            self.last_failures[job.uid] = error.reason
            self.stats[f"{kind}_{error.kind}"] += 1
            if error.kind in COOLDOWN_KINDS:
                self._cooldown[job.uid] = until
            logger.debug("%s of %s at %s failed: %s", kind, job.uid, job.endpoint, error.reason)

    # ----- backward -----------------------------------------------------------------------------

    async def _backward_all(
        self, jobs: list[Job], inputs: torch.Tensor, grads: list[torch.Tensor], batch_size: int
    ) -> tuple[dict[int, list[torch.Tensor]], dict[int, ExpertError]]:
        pieces = _rows_of(inputs, jobs)

        async def call(index: int, job: Job) -> list[torch.Tensor]:
            return await calls.expert_backward(
                self.client, job.uid, job.endpoint, [pieces[index]], [grads[index]], self.backward_timeout
            )

        answers, failures = await self._fan_out(
            jobs, call, batch_size, self.backward_k_min, self.backward_timeout
        )
        self._note("backward", jobs, failures)
        return answers, failures

    async def _fan_out(
        self, jobs: list[Job], call: Call, batch_size: int, k_min: int, timeout: float
    ) -> tuple[dict[int, list[torch.Tensor]], dict[int, ExpertError]]:
        return await call_many(
            jobs,
            call,
            batch_size=batch_size,
            k_min=k_min,
            timeout=timeout,
            timeout_after_k_min=self.timeout_after_k_min,
            detect_anomalies=self.detect_anomalies,
        )

    def _check_enough(
        self,
        kind: str,
        needed: int,
        jobs: list[Job],
        answers: dict,
        failures: dict[int, ExpertError],
        batch_size: int,
    ) -> None:
        counts = torch.zeros(batch_size, dtype=torch.long)
        for index in answers:
            counts[jobs[index].rows] += 1
        short = (counts < needed).nonzero().flatten().tolist()
        if not short or self.allow_zero_outputs:
            return
        reasons = [f"{jobs[i].uid}: {error.reason}" for i, error in sorted(failures.items())]
        detail = "; ".join(reasons[:8]) + (f"; and {len(reasons) - 8} more" if len(reasons) > 8 else "")
        if not jobs:
            detail = f"no live expert under {self.uid_prefix!r} was found"
        raise MixtureError(
            f"{kind}: {len(short)} of {batch_size} samples got fewer than {needed} expert answers "
            f"(first: sample {short[0]} got {int(counts[short[0]])}). {detail}"
        )

    def extra_repr(self) -> str:
        return (
            f"uid_prefix={self.uid_prefix!r}, grid_size={self.grid_size}, "
            f"k_best={self.k_best}, k_min={self.k_min}"
        )


def _rows_of(inputs: torch.Tensor, jobs: list[Job]) -> tuple[torch.Tensor, ...]:
    """Each job's rows of ``inputs``, gathered at once: one index per job costs ~50 us each."""
    if not jobs:
        return ()
    gathered = inputs.index_select(0, torch.cat([job.rows for job in jobs]))
    return gathered.split([len(job.rows) for job in jobs])


class _MixtureCall(torch.autograd.Function):
    """Experts' outputs ``[batch, k_best, *output]`` and which slots answered ``[batch, k_best]``."""

    @staticmethod
    def forward(
        ctx: Any, moe: RemoteMixtureOfExperts, jobs: list[Job], dummy: torch.Tensor, inputs: torch.Tensor
    ):
        detached = inputs.detach()
        outputs, answered, answered_jobs = moe.client.run(moe._gather, jobs, detached)
        ctx.moe = moe
        ctx.jobs = answered_jobs
        ctx.save_for_backward(detached)
        ctx.mark_non_differentiable(answered)
        return outputs, answered

    @staticmethod
    def backward(ctx: Any, grad_outputs: torch.Tensor, _grad_answered: Any):
        moe: RemoteMixtureOfExperts = ctx.moe
        (inputs,) = ctx.saved_tensors
        jobs: list[Job] = ctx.jobs
        grad_inputs = torch.zeros_like(inputs)
        if jobs:  # always: the experts learn from their backward calls, whether or not x needs a gradient
            rows, slots = torch.cat([job.rows for job in jobs]), torch.cat([job.slots for job in jobs])
            grads = grad_outputs[rows, slots].split([len(job.rows) for job in jobs])
            answers, failures = moe.client.run(moe._backward_all, jobs, inputs, grads, len(inputs))
            moe._check_enough("backward", moe.backward_k_min, jobs, answers, failures, len(inputs))
            for index, tensors in answers.items():
                grad_inputs.index_add_(0, jobs[index].rows, tensors[0].to(grad_inputs.dtype))
        return None, None, None, grad_inputs if ctx.needs_input_grad[3] else None
