"""An expert server's life in the simulator: announced in the DHT, shut down gracefully, restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trio

from simulator import DeviceProfile, SimNetwork, run_simulation
from tesseract.client.discovery import get_active_successors, get_experts
from tesseract.dht import DHTNode
from tesseract.net import RemoteError, RPCClient
from tesseract.server import ExpertServer
from tesseract.server.options import expand_experts
from tests.experts import backward, forward, make_backend, same_weights


def test_announced_renewed_shut_down_gracefully_and_restored(tmp_path: Path) -> None:
    backends = [make_backend(uid, seed=i) for i, uid in enumerate(["ffn.0.0", "ffn.0.1", "ffn.1.0"])]
    outcome: dict = {}

    async def main(network: SimNetwork) -> None:
        bootstrap, server_host, client_host = network.add_hosts(3)
        stop = trio.Event()

        async def run_bootstrap() -> None:
            async with DHTNode.start(bootstrap, []):
                await trio.sleep_forever()

        async def run_server() -> None:
            async with (
                DHTNode.start(server_host, [bootstrap.address]) as dht,
                ExpertServer.start(
                    server_host, backends, dht=dht, update_period=10.0, checkpoint_dir=tmp_path
                ) as server,
            ):
                outcome["server"] = server
                await stop.wait()
            outcome["stopped_at"] = trio.current_time()

        bootstrap.start(run_bootstrap)
        await trio.sleep(0.1)
        server_host.start(run_server)
        await trio.sleep(1)
        async with (
            DHTNode.start(client_host, [bootstrap.address]) as reader,
            RPCClient(client_host) as client,
        ):
            infos = await get_experts(reader, ["ffn.0.0", "ffn.1.0", "ffn.9.9"])
            assert [info.endpoint if info else None for info in infos] == [server_host.address] * 2 + [None]
            found = await reader.get("ffn.0.0", latest=True)
            assert found.expiration == pytest.approx(server_host.wall_time() + 20, abs=1.5)
            await trio.sleep(35)
            assert outcome["server"].announcements >= 4  # renewed every 10 s
            assert (await get_active_successors(reader, ["ffn"], grid_size=4))["ffn"].keys() == {0, 1}

            x, g = torch.randn(3, 16), torch.randn(3, 16)
            await backward(client, server_host.address, "ffn.0.1", [x], [g])
            trained = backends[1].module.state_dict()

            # A slow device from now on (a forward takes ~9 virtual seconds), so a request is still
            # computing when shutdown begins.
            server_host.profile = DeviceProfile(flops_per_s=1e3, overhead_s=0.0)

            async def slow_request() -> None:
                (outcome["in_flight"],) = await forward(
                    client, server_host.address, "ffn.0.0", [torch.randn(2, 16)]
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_request)
                await trio.sleep(1)  # it is computing now
                stop.set()
                await trio.sleep(0.5)
                with pytest.raises(RemoteError) as info:
                    await forward(client, server_host.address, "ffn.0.0", [torch.randn(2, 16)])
                assert info.value.code == "unavailable"
        assert outcome["in_flight"].shape == (2, 16)  # finished, not dropped
        assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ffn.0.0.pt", "ffn.0.1.pt", "ffn.1.0.pt"]

        # A new server process with fresh weights picks up the checkpoint.
        fresh = [make_backend(uid, seed=100 + i) for i, uid in enumerate(["ffn.0.0", "ffn.0.1", "ffn.1.0"])]
        assert not same_weights(fresh[1], backends[1])
        async with ExpertServer.start(server_host, fresh, checkpoint_dir=tmp_path):
            pass
        assert same_weights(fresh[1], backends[1]) and fresh[1].steps == 1
        assert all(torch.equal(trained[k], v) for k, v in fresh[1].module.state_dict().items())

    run_simulation(main, seed=2, latency=0.01)


def test_expert_patterns_expand_and_are_validated() -> None:
    assert expand_experts("ffn.[0:2].[0:3]") == [f"ffn.{i}.{j}" for i in range(2) for j in range(3)]
    assert expand_experts("ffn.3, attn.[1:3]") == ["ffn.3", "attn.1", "attn.2"]
    for bad in ("ffn", "ffn.[2:1]", "ffn.[0:2],ffn.1", "ffn.x"):
        with pytest.raises(ValueError):
            expand_experts(bad)
