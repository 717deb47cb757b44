"""Start a swarm of DHT nodes in a test world (real loopback or simulated)."""

from __future__ import annotations

import trio

from tesseract.dht import DHTConfig, DHTNode
from tests.worlds import World


async def start_swarm(
    world: World, count: int, config: DHTConfig | None = None, spacing: float = 0.01
) -> list[DHTNode]:
    """``count`` nodes, each joining through the first; returns them once all have joined."""
    nodes: list[DHTNode] = []
    joined = trio.Event()

    async def run(host, peers: list[str]) -> None:
        async with DHTNode.start(host, peers, config=config, leave_gracefully=False) as node:
            nodes.append(node)
            if len(nodes) == count:
                joined.set()
            await trio.sleep_forever()

    first = await world.new_host()
    world.start(first, run, first, [])
    await trio.sleep(spacing)
    for _ in range(count - 1):
        host = await world.new_host()
        world.start(host, run, host, [first.address])
        await trio.sleep(spacing)
    with trio.fail_after(60):
        await joined.wait()
    return nodes
