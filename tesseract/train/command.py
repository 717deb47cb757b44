"""``tesseract train``: train a mixture-of-experts classifier through the swarm.

    tesseract train --initial-peers HOST:PORT --uid-prefix ffn --grid 4 8 --hidden-dim 64 --epochs 10

It joins the DHT, waits until experts are announced, trains on the bundled digits (or MNIST IDX
files), prints progress and a per-epoch test accuracy, and with ``--json`` writes the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy
import torch
import trio

from tesseract.client.averaging import AveragingConfig, ParameterAverager
from tesseract.client.errors import MixtureError
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.client.session import Client
from tesseract.console import say
from tesseract.dht.node import BootstrapError
from tesseract.train.data import load_dataset
from tesseract.train.model import MixtureClassifier
from tesseract.train.trainer import TrainConfig, Trainer, TrainingStalled


def build_mixture(options: argparse.Namespace, client: Client) -> RemoteMixtureOfExperts:
    return RemoteMixtureOfExperts(
        in_features=options.hidden_dim,
        grid_size=options.grid,
        uid_prefix=options.uid_prefix,
        client=client,
        k_best=options.k_best,
        k_min=options.k_min,
        forward_timeout=options.forward_timeout,
        timeout_after_k_min=options.timeout_after_k_min,
        backward_k_min=options.backward_k_min,
        backward_timeout=options.backward_timeout,
        allow_zero_outputs=options.allow_zero_outputs,
        detect_anomalies=options.detect_anomalies,
    )


async def count_live_experts(mixture: RemoteMixtureOfExperts) -> int:
    """How many experts of the mixture's grid the DHT knows to be alive (one round per dimension)."""
    prefixes = [mixture.uid_prefix]
    for size in mixture.grid_size:
        successors = await mixture.finder.successors(prefixes)
        prefixes = [f"{p}.{c}" for p in prefixes for c in sorted(successors[p]) if c < size]
    return len(prefixes)


async def wait_for_experts(mixture: RemoteMixtureOfExperts, count: int, timeout: float) -> int:
    with trio.move_on_after(timeout):
        while True:
            live = await count_live_experts(mixture)
            if live >= count:
                return live
            mixture.finder.clear()
            await trio.sleep(0.5)
    raise MixtureError(f"fewer than {count} experts under {mixture.uid_prefix!r} appeared within {timeout}s")


def save_parameters(model: torch.nn.Module, path: Path) -> None:
    """The model's own parameters (not the remote experts), flattened into one ``.npy`` vector."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    numpy.save(path, flat.numpy(), allow_pickle=False)


def run(options: argparse.Namespace) -> int:
    if len(options.grid) < 1 or options.hidden_dim < 1:
        print("error: --grid needs at least one size and --hidden-dim must be positive", file=sys.stderr)
        return 2
    if options.average_every < 0 or options.average_group < 2 or not options.average_window > 0:
        print(
            "error: --average-every must be >= 0, --average-group >= 2 and --average-window positive",
            file=sys.stderr,
        )
        return 2
    try:
        data = load_dataset(options.dataset, seed=options.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(options.seed)
    try:
        with Client(options.initial_peers, listen=options.listen) as client:
            mixture = build_mixture(options, client)
            live = client.run(wait_for_experts, mixture, options.wait_for_experts, options.wait_timeout)
            say(f"trainer joined the DHT at {client.host.address}; {live} experts under {options.uid_prefix}")
            model = MixtureClassifier(data.features, data.classes, mixture)
            averager = None
            settle = options.average_settle
            if settle is None:
                settle = 3 * options.average_window  # trainers that finish apart still meet
            if options.average_every > 0:
                averager = ParameterAverager(
                    client,
                    list(model.parameters()),
                    AveragingConfig(
                        group_size=options.average_group,
                        window=options.average_window,
                        lead=min(1.0, options.average_window / 4),
                    ),
                )
                client.run(client.start_service, averager.serve)
            config = TrainConfig(
                epochs=options.epochs,
                batch_size=options.batch_size,
                learning_rate=options.learning_rate,
                seed=options.seed,
                log_every=options.log_every,
                max_steps=options.max_steps,
                average_every=options.average_every,
                average_settle=settle if averager is not None else 0.0,
            )
            live = sys.stdout if sys.stdout.isatty() else None
            trainer = Trainer(model, data, client, config, report=say, live_progress=live, averager=averager)
            summary = trainer.run()
            if options.save_parameters is not None:
                save_parameters(model, options.save_parameters)
    except (BootstrapError, MixtureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingStalled as exc:
        print(f"error: training stopped: {exc}", file=sys.stderr)
        return 1
    accuracy = "-" if summary["final_test_accuracy"] is None else f"{summary['final_test_accuracy']:.4f}"
    say(
        f"done: test accuracy {accuracy} after {summary['steps']} steps, "
        f"{summary['samples_per_s']:.0f} samples/s, {summary['failed_calls']} of "
        f"{summary['expert_calls']} expert calls failed"
    )
    if options.json is not None:
        options.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
