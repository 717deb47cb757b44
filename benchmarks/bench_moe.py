"""A mixture-of-experts layer through a swarm on loopback, against the same mixture computed locally.

    python benchmarks/bench_moe.py --json out.json

The swarm: a DHT node and 4 server processes holding a 4x8 grid of ``ffn`` experts (hidden 256).
This process runs ``RemoteMixtureOfExperts(k_best=4)`` on batches of 64, forward and backward, in
a closed loop. The baseline runs the same computation in this process, in the same run: the same
gate, the same 32 experts (each with its own Adam, as on the servers), exact top-4 routing, the same
softmax mixture. ``moe_efficiency`` is remote samples/s over local samples/s; ``beam_search_share``
is the share of the remote step spent routing (beam search and its DHT rounds).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import report
from tesseract.client import Client
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.launch import LocalSwarm
from tesseract.runtime.backend import adam
from tesseract.runtime.zoo import make_expert


class LocalMixture(nn.Module):
    """What the remote layer computes, with every expert in this process (exact top-k routing)."""

    def __init__(self, hidden: int, grid: tuple[int, ...], k_best: int) -> None:
        super().__init__()
        self.grid, self.k_best = grid, k_best
        self.proj = nn.Linear(hidden, sum(grid))
        self.cells = list(itertools.product(*(range(size) for size in grid)))
        self.experts = nn.ModuleList(make_expert("ffn", hidden)[0] for _ in self.cells)
        self.optimizers = [adam(expert.parameters(), lr=1e-3) for expert in self.experts]  # as the servers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x).split(self.grid, dim=-1)
        scores = sum(
            logits[d][:, [cell[d] for cell in self.cells]] for d in range(len(self.grid))
        )  # [batch, experts]
        top, chosen = scores.topk(self.k_best, dim=1)
        weights = torch.softmax(top, dim=1)
        out = torch.zeros_like(x)
        for index in chosen.unique().tolist():
            rows, slots = (chosen == index).nonzero(as_tuple=True)
            out = out.index_add(0, rows, weights[rows, slots, None] * self.experts[index](x[rows]))
        return out

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def timed_loop(step, warmup: float, duration: float) -> tuple[int, float]:
    until = time.perf_counter() + warmup
    while time.perf_counter() < until:
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration:
        step()
        steps += 1
    return steps, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--k-best", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    grid = tuple(options.grid)
    x = torch.randn(options.batch, options.hidden_dim)

    torch.manual_seed(0)
    local = LocalMixture(options.hidden_dim, grid, options.k_best)
    gate_optimizer = torch.optim.Adam(local.proj.parameters(), lr=1e-3)

    def local_step() -> None:
        local(x).pow(2).mean().backward()
        gate_optimizer.step()
        gate_optimizer.zero_grad(set_to_none=True)
        local.step()

    local_steps, local_time = timed_loop(local_step, options.warmup, options.duration)

    # The trainer side runs one torch thread, as `tesseract swarm --local` runs its trainer: the servers
    # do the heavy work, and this process's idle OpenMP workers would spin on the cores they need
    # (measured: 81.5 ms a step with 2 threads here, 74.2 ms with 1). The local baseline above keeps
    # torch's default threads: it does all the work itself.
    local_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    swarm = LocalSwarm(servers=options.servers, grid=grid, hidden_dim=options.hidden_dim)
    with swarm, Client([swarm.bootstrap.address]) as client:
        torch.manual_seed(0)
        mixture = RemoteMixtureOfExperts(
            in_features=options.hidden_dim,
            grid_size=grid,
            uid_prefix="ffn",
            client=client,
            k_best=options.k_best,
        )
        optimizer = torch.optim.Adam(mixture.parameters(), lr=1e-3)

        def remote_step() -> None:
            mixture(x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        timed_loop(remote_step, options.warmup, 0.0)
        routing_before = mixture.routing_time
        rounds_before = mixture.finder.rounds
        remote_steps, remote_time = timed_loop(remote_step, 0.0, options.duration)
        routing = mixture.routing_time - routing_before
        rounds = mixture.finder.rounds - rounds_before
        failures = mixture.stats["forward_failures"] + mixture.stats["backward_failures"]

    local_rate = local_steps * options.batch / local_time
    remote_rate = remote_steps * options.batch / remote_time
    result = {
        "moe_efficiency": remote_rate / local_rate,
        "beam_search_share": routing / remote_time,
        "remote_samples_per_s": remote_rate,
        "local_samples_per_s": local_rate,
        "remote_step_ms": 1e3 * remote_time / max(1, remote_steps),
        "local_step_ms": 1e3 * local_time / max(1, local_steps),
        "routing_ms_per_step": 1e3 * routing / max(1, remote_steps),
        "dht_rounds_per_step": rounds / max(1, remote_steps),
        "failed_calls": failures,
        "parameters": {
            "grid": list(grid),
            "k_best": options.k_best,
            "hidden_dim": options.hidden_dim,
            "batch": options.batch,
            "servers": options.servers,
            "duration_s": options.duration,
            "local_torch_threads": local_threads,
            "remote_client_torch_threads": 1,
            "device": "cpu",
        },
    }
    rows = [
        ("remote samples/s", f"{remote_rate:.1f}", ""),
        ("local samples/s (same run)", f"{local_rate:.1f}", ""),
        ("moe_efficiency", f"{result['moe_efficiency']:.3f}", ">= 0.8"),
        ("remote step (ms)", f"{result['remote_step_ms']:.2f}", ""),
        ("local step (ms)", f"{result['local_step_ms']:.2f}", ""),
        ("routing per step (ms)", f"{result['routing_ms_per_step']:.3f}", ""),
        ("beam_search_share", f"{result['beam_search_share']:.4f}", "<= 0.05"),
        ("DHT rounds per step", f"{result['dht_rounds_per_step']:.3f}", ""),
        ("failed expert calls", str(failures), ""),
    ]
    title = (
        f"mixture of experts: grid {'x'.join(map(str, grid))}, k_best {options.k_best}, ffn hidden "
        f"{options.hidden_dim}, batch {options.batch}, {options.servers} server processes, CPU"
    )
    report(title, rows, result, options.json)


if __name__ == "__main__":
    main()
