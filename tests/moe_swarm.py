"""A small swarm in a test world: a DHT bootstrap node, expert servers announcing a grid, a client."""

from __future__ import annotations

from contextlib import AsyncExitStack

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
    initial_peers: list[str] | None,
    *,
    host: Host | None = None,
    **options,
) -> tuple[Host, ExpertServer]:
    """An expert server on ``host`` (a new one unless given); with ``initial_peers`` (even empty) it
    also runs a DHT node and has announced its experts once when this returns."""
    host = host or await world.new_host()
    started: list[ExpertServer] = []

    async def run() -> None:
        async with AsyncExitStack() as stack:
            if initial_peers is not None:
                options["dht"] = await stack.enter_async_context(
                    DHTNode.start(host, initial_peers, leave_gracefully=False)
                )
            started.append(await stack.enter_async_context(ExpertServer.start(host, backends, **options)))
            await trio.sleep_forever()

    world.start(host, run)
    with trio.fail_after(20):
        while not started:
            await trio.sleep(0.01)
    return host, started[0]
