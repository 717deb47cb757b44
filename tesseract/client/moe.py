"""``RemoteMixtureOfExperts``: a gated mixture whose experts are live servers found through the DHT.

For a batch ``x``: one linear gate per grid dimension scores every coordinate; a beam search over the
DHT's prefix records picks each sample's ``k_best`` best-scored live experts (one DHT round per
dimension for the whole batch, cached briefly); every chosen expert gets one request with all the
rows routed to it, all in parallel (``parallel.call_many``); the output of a sample is the average of
its experts' outputs weighted by a softmax of their gate scores over the experts that answered.
Backward runs the same way: experts that fail contribute no gradient and do not stop the step.

``forward`` and ``forward_async`` are one path (``mixing`` does the arithmetic); they differ only in
how the network part is run: through ``client.run`` from synchronous torch code, or awaited from trio.
A subclass changes the gating rule through ``gate_scores``, ``gate_weights`` and ``result``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import trio
from torch import nn

from tesseract.client import calls, mixing
from tesseract.client.beam_search import ChosenExpert
from tesseract.client.errors import ExpertError, MixtureError
from tesseract.client.expert import DUMMY
from tesseract.client.mixing import Dispatch
from tesseract.client.parallel import Call, Job, call_many
from tesseract.client.routing import ExpertFinder
from tesseract.client.session import Client
from tesseract.expert_uid import UID_DELIMITER, parse_prefix
from tesseract.net.tensors import DTYPE_NAMES
from tesseract.runtime.schema import ExpertSchema, TensorSchema

logger = logging.getLogger(__name__)

#: Failures that suggest the expert is gone, broken or far too slow: leave it out of routing a while.
#: A refusal (a typed error reply) says nothing about the next call, so it is not held against it.
COOLDOWN_KINDS = {ExpertError.TIMEOUT, ExpertError.UNREACHABLE, ExpertError.BAD_ANSWER, ExpertError.STRAGGLER}


class RemoteMixtureOfExperts(nn.Module):
    """A mixture-of-experts layer over the swarm; see the module docstring.

    ``k_min``: answers each sample needs from its forward calls; ``timeout_after_k_min``: how long to
    wait for the other experts once every sample has them; ``backward_k_min``/``backward_timeout``:
    the same for backward. ``output_schema``: what one sample of every expert's output must be
    (``[in_features]`` float32 unless given); an expert whose announced schema does not take
    ``[in_features]`` inputs to it is that expert's failure. ``allow_zero_outputs``: a sample that
    gets too few answers goes on with what it got (zeros if nothing) instead of raising. An answer
    with NaN or infinite values is always that expert's failure; ``detect_anomalies`` adds the costlier
    check that no answer's norm overflows (finite values so large that any loss over them is
    infinite). ``failure_cooldown``: seconds an expert that timed out, straggled, could not be reached
    or answered nonsense is left out of routing (a refusal is not held against it).
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
        output_schema: TensorSchema | None = None,
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
        self.output_schema = output_schema if output_schema is not None else TensorSchema((in_features,))
        self.allow_zero_outputs = allow_zero_outputs
        self.detect_anomalies = detect_anomalies
        self.beam_size = beam_size
        self.failure_cooldown = failure_cooldown
        self.proj = nn.Linear(in_features, sum(self.grid_size))
        self.finder = ExpertFinder(client.require_dht(), cache_ttl=cache_ttl)
        #: Calls and failures: forward_calls, forward_failures, backward_calls, backward_failures, and
        #: per kind of failure (forward_timeout, backward_bad_answer, ...).
        self.stats: Counter[str] = Counter()
        #: Seconds spent (on the client's clock) routing: the beam search and its DHT rounds.
        self.routing_time = 0.0
        #: The experts chosen for each sample in the last forward, best first (for inspection).
        self.last_routing: list[list[ChosenExpert]] = []
        #: Failure reasons of the last forward and backward, uid -> reason.
        self.last_failures: dict[str, str] = {}
        self._cooldown: dict[str, float] = {}  # uid -> loop time until which it is left out

    # ----- the one path -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    async def forward_async(self, x: torch.Tensor) -> torch.Tensor:
        """The same mixture without autograd, for trio code (inference): ``await moe.forward_async(x)``."""
        return await self._forward_async(x)

    def _forward(self, x: torch.Tensor) -> Any:
        flat = self._flatten(x)
        scores = self.gate_scores(flat)
        dispatch = self.client.run(self._dispatch, flat.detach(), scores)
        return self._finish(x, flat, scores, dispatch)

    async def _forward_async(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            flat = self._flatten(x)
            scores = self.gate_scores(flat)
            dispatch = await self._dispatch(flat, scores)
            return self._finish(x, flat, scores, dispatch)

    def _finish(
        self, x: torch.Tensor, flat: torch.Tensor, scores: list[torch.Tensor], dispatch: Dispatch
    ) -> Any:
        outputs = mixing.with_backward(self._backward, dispatch, DUMMY, flat)
        weights = self.gate_weights(scores, dispatch.coordinates, dispatch.alive)
        return self.result(mixing.combine(weights, outputs, x.shape[:-1]), scores, dispatch)

    # ----- the gating rule: what a subclass changes ---------------------------------------------

    def gate_scores(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per grid dimension, every coordinate's score ``[batch, size]``; routing takes the best sums."""
        return list(self.proj(flat).split(self.grid_size, dim=-1))

    def gate_weights(
        self, scores: list[torch.Tensor], coordinates: torch.Tensor, alive: torch.Tensor
    ) -> torch.Tensor:
        """Each slot's weight ``[batch, k]``: a softmax over the experts that answered."""
        return mixing.softmax_weights(scores, coordinates, alive)

    def result(self, mixed: torch.Tensor, scores: list[torch.Tensor], dispatch: Dispatch) -> Any:
        """What ``forward`` returns: the mixed output."""
        return mixed

    # ----- the network part, on the client's loop -------------------------------------------------

    async def _dispatch(self, flat: torch.Tensor, scores: list[torch.Tensor]) -> Dispatch:
        """Route, call every chosen expert, and lay out their answers."""
        batch_size = len(flat)
        self.last_routing = await self._route([part.detach().to("cpu", torch.float64) for part in scores])
        jobs, coordinates = mixing.plan(self.last_routing, batch_size, self.k_best, len(self.grid_size))
        pieces = mixing.rows_of(flat, jobs)
        expected = self._expected_schema(flat)

        async def call(index: int, job: Job) -> list[torch.Tensor]:
            return await calls.expert_forward(
                self.client, job.uid, job.endpoint, [pieces[index]], self.forward_timeout, expected=expected
            )

        answers = await self._fan_out("forward", jobs, call, batch_size, self.k_min, self.forward_timeout)
        outputs, alive = mixing.lay_out(jobs, answers, batch_size, self.k_best, self.output_schema)
        return Dispatch(coordinates, outputs, alive, [jobs[index] for index in sorted(answers)])

    def _backward(self, jobs: list[Job], inputs: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
        return self.client.run(self._backward_async, jobs, inputs, grad_outputs)

    async def _backward_async(
        self, jobs: list[Job], inputs: torch.Tensor, grad_outputs: torch.Tensor
    ) -> torch.Tensor:
        """The backward fan-out: each answered expert gets its slots' gradients; input gradients back."""
        pieces = mixing.rows_of(inputs, jobs)
        grads = mixing.slot_gradients(grad_outputs, jobs)
        expected = self._expected_schema(inputs)

        async def call(index: int, job: Job) -> list[torch.Tensor]:
            return await calls.expert_backward(
                self.client,
                job.uid,
                job.endpoint,
                [pieces[index]],
                [grads[index]],
                self.backward_timeout,
                expected=expected,
            )

        answers = await self._fan_out(
            "backward", jobs, call, len(inputs), self.backward_k_min, self.backward_timeout
        )
        return mixing.scatter_gradients(jobs, answers, inputs)

    def _expected_schema(self, inputs: torch.Tensor) -> ExpertSchema:
        """What an expert must announce to be of use here: our rows in, our output schema out."""
        rows = TensorSchema((self.in_features,), DTYPE_NAMES[inputs.dtype])
        return ExpertSchema((rows,), (self.output_schema,))

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected inputs with {self.in_features} features, got shape {list(x.shape)}")
        return x.reshape(-1, self.in_features)

    async def _route(self, scores: list[torch.Tensor]) -> list[list[ChosenExpert]]:
        started = trio.current_time()
        self._cooldown = {uid: until for uid, until in self._cooldown.items() if until > started}
        try:
            return await self.finder.find_best(
                self.uid_prefix, scores, self.grid_size, self.k_best, self.beam_size, exclude=self._cooldown
            )
        finally:
            self.routing_time += trio.current_time() - started

    async def _fan_out(
        self, kind: str, jobs: list[Job], call: Call, batch_size: int, k_min: int, timeout: float
    ) -> dict[int, list[torch.Tensor]]:
        """Call every job; note the failures; raise unless every sample got ``k_min`` answers."""
        answers, failures = await call_many(
            jobs,
            call,
            batch_size=batch_size,
            k_min=k_min,
            timeout=timeout,
            timeout_after_k_min=self.timeout_after_k_min,
            detect_anomalies=self.detect_anomalies,
        )
        self._note(kind, jobs, failures)
        self._check_enough(kind, k_min, jobs, answers, failures, batch_size)
        return answers

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

    def _check_enough(
        self,
        kind: str,
        needed: int,
        jobs: list[Job],
        answers: dict[int, list[torch.Tensor]],
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
