"""A training run in a test world: servers for a grid of ffn experts, and a trainer on the digits."""

from __future__ import annotations

from typing import Any

import torch
import trio

from tesseract.client import Client
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.net.host import Host
from tesseract.train.data import load_digits
from tesseract.train.model import MixtureClassifier
from tesseract.train.trainer import TrainConfig, Trainer
from tests.experts import make_backend
from tests.moe_swarm import start_expert_server
from tests.worlds import World

HIDDEN = 64
GRID = (4, 8)


def backends_for(uids: list[str]) -> list:
    return [make_backend(uid, "ffn", HIDDEN, seed=hash_uid(uid)) for uid in uids]


def hash_uid(uid: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(uid))


def grid_row(row: int, columns: range = range(GRID[1])) -> list[str]:
    return [f"ffn.{row}.{column}" for column in columns]


async def serve(world: World, uids: list[str], boot: Host, **options: Any) -> Host:
    """An expert server for ``uids`` (on ``host=`` if given) that joined through ``boot``."""
    host, _ = await start_expert_server(world, backends_for(uids), [boot.address], **options)
    return host


def make_trainer(client: Client, epochs: int, **mixture_options: Any) -> Trainer:
    torch.manual_seed(0)
    options = {"k_best": 4, "forward_timeout": 2.0, "backward_timeout": 2.0, "timeout_after_k_min": 0.2}
    options.update(mixture_options)
    mixture = RemoteMixtureOfExperts(
        in_features=HIDDEN, grid_size=GRID, uid_prefix="ffn", client=client, **options
    )
    data = load_digits()
    model = MixtureClassifier(data.features, data.classes, mixture)
    return Trainer(model, data, client, TrainConfig(epochs=epochs, log_every=0), report=lambda line: None)


async def wait_for_steps(trainer: Trainer, steps: int) -> None:
    while trainer.state.steps + trainer.state.failed_steps < steps:
        await trio.sleep(0.05)
