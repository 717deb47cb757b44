"""A busy little simulated swarm used by the determinism tests (also run in a subprocess)."""

from __future__ import annotations

import sys

import trio

from simulator import LogNormal, SimNetwork, run_simulation
from tesseract.net import CallTimeout, DatagramRPC, PeerUnavailable, RemoteError, RPCClient, RPCServer
from tests.service import Add, Sum, make_router


def busy_swarm_trace(seed: int, hosts: int = 12, seconds: float = 5.0) -> tuple[str, int]:
    """Stream and datagram RPCs between random peers, with loss, a crash, a restart and a partition."""
    network = SimNetwork(seed=seed, latency=LogNormal(0.02, 0.5), loss=0.02, bandwidth=10e6)

    async def node(host, peers: list[str]) -> None:
        router = make_router()
        datagrams = DatagramRPC(host, router)
        async with trio.open_nursery() as nursery:
            await nursery.start(RPCServer(host, router).serve)
            await nursery.start(datagrams.serve)
            async with RPCClient(host) as client:
                for i in range(10_000):
                    peer = peers[host.random.randrange(len(peers))]
                    try:
                        if i % 2:
                            await client.call(peer, "add", Add(i, 1), Sum, timeout=0.5)
                        else:
                            await datagrams.call(peer, "add", Add(i, 2), Sum, timeout=0.3)
                    except (CallTimeout, PeerUnavailable, RemoteError):
                        await trio.sleep(0.05)

    async def main(network: SimNetwork) -> int:
        nodes = network.add_hosts(hosts)
        addresses = [h.address for h in nodes]
        for h in nodes:
            h.start(node, h, addresses)
        await trio.sleep(seconds / 4)
        nodes[0].crash()
        network.partition(addresses[: hosts // 2])
        await trio.sleep(seconds / 4)
        network.heal()
        nodes[0].restart()
        nodes[0].start(node, nodes[0], addresses)
        await trio.sleep(seconds / 2)
        return network.messages_delivered

    delivered = run_simulation(main, network)
    return network.trace_hash, delivered


if __name__ == "__main__":
    trace, delivered = busy_swarm_trace(int(sys.argv[1]))
    print(trace, delivered)
