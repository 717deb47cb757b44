"""The mixture's core: from the gate's scores and the experts' answers to the output and its gradients.

Every mixture layer, in both of its paths (``forward`` under autograd, ``forward_async`` on trio),
goes through the same steps, and only the gating rule differs between layers:

1. ``plan``: the beam search's choices become one ``Job`` per expert (its rows, and its slot in
   each) and every row's chosen coordinates ``[batch, k, dims]``;
2. the layer calls the experts; ``lay_out`` puts their answers in a ``[batch, k, *output]`` tensor
   (zeros where no answer came) and says which slots answered: a ``Dispatch``;
3. a gating rule weighs the slots that answered: ``softmax_weights`` (softmax of the gate scores
   over the experts that answered) or ``probability_weights`` (the gate's probability of each
   expert, for the switch); ``combine`` sums the weighted outputs;
4. ``with_backward`` ties the laid-out outputs to the inputs through ``ExpertOutputs``, whose
   backward sends each answered expert the gradients of its slots (the layer's backward fan-out)
   and ``scatter_gradients`` adds their input gradients back by row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from tesseract.client.beam_search import ChosenExpert
from tesseract.client.parallel import Job
from tesseract.runtime.schema import TensorSchema

#: The layer's backward fan-out: (answered jobs, inputs, gradients of the outputs) -> input gradients.
Backward = Callable[[list[Job], torch.Tensor, torch.Tensor], torch.Tensor]


class Dispatch(NamedTuple):
    """What one forward fan-out gave, laid out by row and slot."""

    coordinates: torch.Tensor  # [batch, k, dims] int64: each slot's grid coordinates (0 where empty)
    outputs: torch.Tensor  # [batch, k, *output]: the experts' outputs, zeros where none answered
    alive: torch.Tensor  # [batch, k] bool: the slot holds an expert that answered
    answered: list[Job]  # the jobs that answered: the backward goes to them alone


def plan(
    routing: Sequence[Sequence[ChosenExpert]], batch_size: int, k_best: int, dims: int
) -> tuple[list[Job], torch.Tensor]:
    """One job per chosen expert, with all its rows; every row's coordinates ``[batch, k, dims]``."""
    filler = [(0,) * dims] * k_best
    coordinates = torch.tensor(
        [([e.coordinates for e in experts] + filler)[:k_best] for experts in routing], dtype=torch.long
    ).reshape(batch_size, k_best, dims)
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
    return jobs, coordinates


def rows_of(inputs: torch.Tensor, jobs: Sequence[Job]) -> tuple[torch.Tensor, ...]:
    """Each job's rows of ``inputs``, gathered at once: one index per job costs ~50 us each."""
    if not jobs:
        return ()
    gathered = inputs.index_select(0, torch.cat([job.rows for job in jobs]))
    return gathered.split([len(job.rows) for job in jobs])


def lay_out(
    jobs: Sequence[Job],
    answers: dict[int, list[torch.Tensor]],
    batch_size: int,
    k_best: int,
    schema: TensorSchema,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The answers (one tensor each, by job index) as ``[batch, k, *schema]``, and which slots answered."""
    outputs = torch.zeros(batch_size, k_best, *schema.shape, dtype=schema.torch_dtype)
    answered = torch.zeros(batch_size, k_best, dtype=torch.bool)
    for index, (tensor,) in answers.items():
        job = jobs[index]
        outputs[job.rows, job.slots] = tensor
        answered[job.rows, job.slots] = True
    return outputs, answered


def chosen_scores(scores: Sequence[torch.Tensor], coordinates: torch.Tensor) -> torch.Tensor:
    """Each slot's score ``[batch, k]``: the sum over the dimensions of its coordinate's score."""
    return sum(part.gather(1, coordinates[:, :, d]) for d, part in enumerate(scores))  # type: ignore[return-value]


def softmax_weights(
    scores: Sequence[torch.Tensor], coordinates: torch.Tensor, alive: torch.Tensor
) -> torch.Tensor:
    """Softmax of the chosen experts' gate scores over those that answered (zeros where none did)."""
    gate = chosen_scores(scores, coordinates)
    any_alive = alive.any(dim=1, keepdim=True)
    gate = gate.masked_fill(~alive & any_alive, float("-inf")).masked_fill(~any_alive, 0.0)
    return torch.softmax(gate, dim=1) * alive


def probability_weights(
    log_probs: Sequence[torch.Tensor], coordinates: torch.Tensor, alive: torch.Tensor
) -> torch.Tensor:
    """The gate's probability of each chosen expert that answered (a product over the dimensions)."""
    return chosen_scores(log_probs, coordinates).exp() * alive


def combine(weights: torch.Tensor, outputs: torch.Tensor, leading: torch.Size) -> torch.Tensor:
    """``sum_k weights[:, k] * outputs[:, k]``, reshaped to the input's leading dimensions."""
    weights = weights.reshape(*weights.shape, *([1] * (outputs.dim() - 2))).to(outputs.dtype)
    mixed = (weights * outputs).sum(dim=1)
    return mixed.reshape(*leading, *mixed.shape[1:])


def slot_gradients(grad_outputs: torch.Tensor, jobs: Sequence[Job]) -> tuple[torch.Tensor, ...]:
    """Each job's share of the gradients of ``[batch, k, *output]``: its rows, in its slots."""
    if not jobs:
        return ()
    rows, slots = torch.cat([job.rows for job in jobs]), torch.cat([job.slots for job in jobs])
    return grad_outputs[rows, slots].split([len(job.rows) for job in jobs])


def scatter_gradients(
    jobs: Sequence[Job], answers: dict[int, list[torch.Tensor]], inputs: torch.Tensor
) -> torch.Tensor:
    """The input gradients: each answered job's (one tensor each) added to its rows."""
    grad_inputs = torch.zeros_like(inputs)
    for index, (tensor,) in answers.items():
        grad_inputs.index_add_(0, jobs[index].rows, tensor.to(grad_inputs.dtype))
    return grad_inputs


def with_backward(
    backward: Backward, dispatch: Dispatch, dummy: torch.Tensor, inputs: torch.Tensor
) -> torch.Tensor:
    """The laid-out outputs, differentiable: autograd calls ``backward`` for them (and so the experts
    train) whenever grad mode is on; ``dummy`` is a zero-size tensor that requires grad, so that
    happens even when nothing before the layer needs a gradient."""
    if not torch.is_grad_enabled():
        return dispatch.outputs
    return ExpertOutputs.apply(backward, dispatch, dummy, inputs)


class ExpertOutputs(torch.autograd.Function):
    """Identity on the experts' laid-out outputs; its backward is the layer's backward fan-out."""

    @staticmethod
    def forward(
        ctx: Any, backward: Backward, dispatch: Dispatch, dummy: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        ctx.backward = backward
        ctx.jobs = dispatch.answered
        ctx.save_for_backward(inputs.detach())
        return dispatch.outputs

    @staticmethod
    def backward(ctx: Any, grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (inputs,) = ctx.saved_tensors
        # Always called: the experts learn from their backward calls, whether or not x needs a gradient.
        grad_inputs = ctx.backward(ctx.jobs, inputs, grad_outputs)
        return None, None, None, grad_inputs if ctx.needs_input_grad[3] else None
