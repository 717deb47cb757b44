"""A small swarm in a test world: a DHT bootstrap node, expert servers announcing a grid, a client."""

from __future__ import annotations

import trio

from tesseract.dht import DHTNode
from tesseract.net.host import Host
from tesseract.runtime import ExpertBackend
from tesseract.server import ExpertServer
from tests.worlds import World


async def start_bootstrap(world: World) -> Host:
    host = await world.new_host()
    ready = trio.Event()

    async def run() -> None:
        async with DHTNode.start(host, [], leave_gracefully=False):
            ready.set()
            await trio.sleep_forever()

    world.start(host, run)
    with trio.fail_after(10):
        await ready.wait()
    return host


async def start_expert_server(
    world: World,
    backends: list[ExpertBackend],
    initial_peers: list[str],
    *,
    host: Host | None = None,
    **options,
) -> tuple[Host, ExpertServer]:
    """A host (new unless given) with a DHT node and an expert server that has announced its experts once."""
    host = host or await world.new_host()
    started: list[ExpertServer] = []

    async def run() -> None:
        async with (
            DHTNode.start(host, initial_peers, leave_gracefully=False) as dht,
            ExpertServer.start(host, backends, dht=dht, **options) as server,
        ):
            started.append(server)
            await trio.sleep_forever()

    world.start(host, run)
    with trio.fail_after(20):
        while not started:
            await trio.sleep(0.01)
    return host, started[0]
