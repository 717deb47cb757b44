"""The mixture's arithmetic (``tesseract.client.mixing``) on its own: no network, no layer."""

from __future__ import annotations

import torch

from tesseract.client import mixing
from tesseract.client.beam_search import ChosenExpert
from tesseract.client.mixing import Dispatch
from tesseract.runtime.schema import TensorSchema


def chosen(i: int, j: int) -> ChosenExpert:
    return ChosenExpert(f"ffn.{i}.{j}", f"host{i}:1", 0.0, (i, j))


# Three rows over a 2 x 2 grid, k = 2; the last row found only one expert.
ROUTING = [[chosen(0, 1), chosen(1, 0)], [chosen(1, 0), chosen(0, 0)], [chosen(0, 1)]]


def test_plan_gives_each_expert_one_job_with_all_its_rows_and_slots() -> None:
    jobs, coordinates = mixing.plan(ROUTING, batch_size=3, k_best=2, dims=2)
    by_uid = {job.uid: (job.endpoint, job.rows.tolist(), job.slots.tolist()) for job in jobs}
    assert [job.uid for job in jobs] == ["ffn.0.1", "ffn.1.0", "ffn.0.0"]  # first seen, first asked
    assert by_uid == {
        "ffn.0.1": ("host0:1", [0, 2], [0, 0]),
        "ffn.1.0": ("host1:1", [0, 1], [1, 0]),
        "ffn.0.0": ("host0:1", [1], [1]),
    }
    assert coordinates.tolist() == [[[0, 1], [1, 0]], [[1, 0], [0, 0]], [[0, 1], [0, 0]]]


def test_lay_out_puts_answers_in_their_rows_and_slots_and_zeros_elsewhere() -> None:
    jobs, _ = mixing.plan(ROUTING, batch_size=3, k_best=2, dims=2)
    answers = {0: [torch.tensor([[1.0], [2.0]])], 2: [torch.tensor([[3.0]])]}  # ffn.1.0 failed
    outputs, alive = mixing.lay_out(jobs, answers, 3, 2, TensorSchema((1,)))
    assert outputs.squeeze(-1).tolist() == [[1.0, 0.0], [0.0, 3.0], [2.0, 0.0]]
    assert alive.tolist() == [[True, False], [False, True], [True, False]]


def test_softmax_weights_are_a_softmax_over_the_experts_that_answered() -> None:
    scores = [torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.5]])]
    coordinates = torch.tensor([[[0, 0], [1, 0], [1, 1]]])  # slot scores 2.0, 3.0, 1.5
    alive = torch.tensor([[True, False, True]])
    weights = mixing.softmax_weights(scores, coordinates, alive)
    expected = torch.softmax(torch.tensor([2.0, 1.5]), dim=0)
    torch.testing.assert_close(weights, torch.tensor([[expected[0], 0.0, expected[1]]]))
    nobody = mixing.softmax_weights(scores, coordinates, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.equal(nobody, torch.zeros(1, 3))


def test_probability_weights_are_the_gates_probability_of_each_expert_that_answered() -> None:
    log_probs = [torch.tensor([[0.25, 0.75]]).log(), torch.tensor([[0.5, 0.5]]).log()]
    coordinates = torch.tensor([[[1, 0], [0, 1]]])
    weights = mixing.probability_weights(log_probs, coordinates, torch.tensor([[True, False]]))
    torch.testing.assert_close(weights, torch.tensor([[0.375, 0.0]]))


def test_combine_weighs_the_slots_and_restores_the_leading_dimensions() -> None:
    outputs = torch.arange(24.0).reshape(6, 2, 2)
    weights = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).repeat(3, 1)
    mixed = mixing.combine(weights, outputs, torch.Size([2, 3]))
    assert mixed.shape == (2, 3, 2)
    torch.testing.assert_close(mixed[0, 0], outputs[0, 0])
    torch.testing.assert_close(mixed[0, 1], outputs[1].mean(0))


def test_the_backward_sends_each_answered_expert_its_slots_gradients_and_adds_theirs_by_row() -> None:
    jobs, coordinates = mixing.plan(ROUTING, batch_size=3, k_best=2, dims=2)
    answered = [jobs[0], jobs[2]]
    inputs = torch.randn(3, 4, requires_grad=True)
    dispatch = Dispatch(coordinates, torch.zeros(3, 2, 1), torch.ones(3, 2, dtype=torch.bool), answered)
    seen = {}

    def backward(jobs_, inputs_, grad_outputs):
        seen["jobs"] = [job.uid for job in jobs_]
        seen["grads"] = [g.squeeze(-1).tolist() for g in mixing.slot_gradients(grad_outputs, jobs_)]
        # Each expert answers its rows' inputs times its slot's gradient.
        answers = {
            index: [rows * grads]
            for index, (rows, grads) in enumerate(
                zip(mixing.rows_of(inputs_, jobs_), mixing.slot_gradients(grad_outputs, jobs_), strict=True)
            )
        }
        return mixing.scatter_gradients(jobs_, answers, inputs_)

    outputs = mixing.with_backward(backward, dispatch, torch.empty(0, requires_grad=True), inputs)
    grad_outputs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).unsqueeze(-1)
    outputs.backward(grad_outputs)
    assert seen == {"jobs": ["ffn.0.1", "ffn.0.0"], "grads": [[1.0, 5.0], [4.0]]}
    expected = inputs.detach() * torch.tensor([[1.0], [4.0], [5.0]])
    torch.testing.assert_close(inputs.grad, expected)
    with torch.no_grad():  # no autograd: the outputs as they are, and nothing to call back
        assert mixing.with_backward(backward, dispatch, torch.empty(0, requires_grad=True), inputs) is (
            dispatch.outputs
        )
