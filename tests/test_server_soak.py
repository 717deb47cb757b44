"""Soak: 32 concurrent clients, valid and invalid requests mixed, over real loopback, bounded in time."""

from __future__ import annotations

import os
import random
from contextlib import AsyncExitStack

import torch
import trio

from tesseract.net import CallTimeout, PeerUnavailable, RemoteError, RPCClient
from tests.experts import backward, forward, make_backend, start_server
from tests.worlds import RealWorld, World

CLIENTS = 32
#: The one right answer to each kind of bad request.
EXPECTED_CODE = {
    "unknown": "not_found",
    "shape": "bad_request",
    "nan": "bad_request",
    "too_big": "bad_request",
}
SOAK_SECONDS = 5.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_thirty_two_clients_mixed_valid_and_invalid() -> None:
    backends = [make_backend(f"ffn.{i}", "ffn", 32, seed=i, max_batch_size=64) for i in range(2)]
    leaks: list[str] = []
    counts = {"valid": 0, "invalid": 0}
    samples: dict[str, float] = {}

    async def client_loop(world: World, client: RPCClient, address: str, seed: int, end: float) -> None:
        rng = random.Random(seed)
        generator = torch.Generator().manual_seed(seed)
        while trio.current_time() < end:
            uid = f"ffn.{rng.randrange(2)}"
            rows = rng.randint(1, 8)
            x = torch.randn(rows, 32, generator=generator)
            action = rng.choice(["forward", "backward", "forward", "backward", "bad"])
            if action == "bad":
                bad = rng.choice(["unknown", "shape", "nan", "too_big", "garbage"])
                try:
                    if bad == "garbage":
                        stream = await client.host.transport.open_stream(address)
                        await stream.send_all(bytes(rng.getrandbits(8) for _ in range(64)))
                        await stream.aclose()
                    elif bad == "unknown":
                        await forward(client, address, "ffn.77", [x])
                    elif bad == "shape":
                        await forward(client, address, uid, [torch.randn(rows, 31)])
                    elif bad == "nan":
                        await backward(client, address, uid, [x], [torch.full((rows, 32), float("nan"))])
                    else:
                        await forward(client, address, uid, [torch.randn(65, 32)])
                    if bad != "garbage":
                        leaks.append(f"bad request {bad} was accepted")
                except RemoteError as exc:
                    if exc.code != EXPECTED_CODE[bad]:
                        leaks.append(f"bad request {bad} got {exc.code}, not {EXPECTED_CODE[bad]}: {exc}")
                counts["invalid"] += 1
                continue
            try:
                if action == "forward":
                    (output,) = await forward(client, address, uid, [x], timeout=20)
                    assert output.shape == (rows, 32)
                else:
                    (grad,) = await backward(client, address, uid, [x], [torch.randn(rows, 32)], timeout=20)
                    assert grad.shape == (rows, 32) and bool(torch.isfinite(grad).all())
                counts["valid"] += 1
            except (RemoteError, CallTimeout, PeerUnavailable, AssertionError) as exc:
                leaks.append(f"valid {action} failed: {exc!r}")

    async def main(world: World) -> None:
        server = await start_server(world, backends)
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(RPCClient(await world.new_host())) for _ in range(CLIENTS)
            ]
            for phase in ("warmup", "soak"):
                end = trio.current_time() + (1.0 if phase == "warmup" else SOAK_SECONDS)
                async with trio.open_nursery() as nursery:
                    for seed, client in enumerate(clients):
                        nursery.start_soon(
                            client_loop, world, client, server.address, seed + (phase == "soak") * 100, end
                        )
                samples[f"fds_after_{phase}"] = open_fds()
                samples[f"rss_after_{phase}"] = rss_mb()
        assert server.errors["bad_request"] > 0 and server.errors["not_found"] > 0

    RealWorld().run(main)
    assert leaks == []
    assert counts["valid"] > 300 and counts["invalid"] > 50
    assert samples["fds_after_soak"] <= samples["fds_after_warmup"] + 4
    assert samples["rss_after_soak"] - samples["rss_after_warmup"] < 40
