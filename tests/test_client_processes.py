"""The synchronous client against real server processes: plain torch code, autograd through the network."""

from __future__ import annotations

import argparse

import pytest
import torch

from tesseract.client import Client, ExpertError, RemoteExpert
from tesseract.launch import NodeProcess
from tesseract.server.command import build_backends

SERVER_OPTIONS = {"expert_cls": "ffn", "hidden_dim": 16, "seed": 7, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def swarm():
    boot = NodeProcess(["dht", "--status-interval", "3600"]).wait_until_listening()
    server = NodeProcess(
        [
            "server",
            "--experts",
            "ffn.[0:2]",
            "--hidden-dim",
            "16",
            "--seed",
            "7",
            "--device",
            "cpu",
            "--initial-peers",
            boot.address,
            "--status-interval",
            "3600",
        ]
    ).wait_until_listening()
    yield boot, server
    server.stop()
    boot.stop()


def local_backends():
    options = argparse.Namespace(
        experts="ffn.[0:2]", device="cpu", clip_grad_norm=None, max_batch_size=4096, **SERVER_OPTIONS
    )
    return {backend.uid: backend for backend in build_backends(options)}


def test_remote_expert_in_plain_torch_code_equals_the_local_module(swarm) -> None:
    boot, server = swarm
    local = local_backends()["ffn.1"].module
    with Client([boot.address]) as client:
        expert = RemoteExpert("ffn.1", server.address, client)
        assert expert.schema.inputs[0].shape == (16,)
        x = torch.randn(5, 16, requires_grad=True)
        out = expert(x)
        out.pow(2).sum().backward()
        x_local = x.detach().clone().requires_grad_(True)
        expected = local(x_local)
        expected.pow(2).sum().backward()
        torch.testing.assert_close(out.detach(), expected.detach(), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.grad, x_local.grad, atol=1e-5, rtol=0)


def test_bad_inputs_and_unknown_experts_get_clear_errors(swarm) -> None:
    boot, server = swarm
    with Client([boot.address]) as client:
        expert = RemoteExpert("ffn.0", server.address, client)
        with pytest.raises(ValueError, match=r"shape \[3, 15\], expected \[batch, 16\]"):
            expert(torch.randn(3, 15))
        with pytest.raises(ValueError, match="NaN"):
            expert(torch.full((2, 16), float("nan")))
        with pytest.raises(ExpertError, match=r"ffn\.9 at .*not_found"):
            RemoteExpert("ffn.9", server.address, client)(torch.randn(2, 16))
        with pytest.raises(ValueError, match="bad expert uid"):
            RemoteExpert("ffn.x", server.address, client)
        # After all that, the expert still answers.
        assert expert(torch.randn(2, 16)).shape == (2, 16)


def test_a_client_without_reachable_peers_fails_fast_with_a_clear_error() -> None:
    from tesseract.dht.node import BootstrapError

    with pytest.raises(BootstrapError, match="none of the 1 initial peers answered"), Client(["127.0.0.1:9"]):
        pass
