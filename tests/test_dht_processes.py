"""16 DHT nodes as separate processes on loopback: real UDP between real processes."""

from __future__ import annotations

from tesseract.launch import LocalDHTSwarm


def test_sixteen_processes_store_and_get_everywhere_and_survive_a_sigkill() -> None:
    with LocalDHTSwarm(16) as swarm:
        nodes = swarm.nodes
        assert len({node.address for node in nodes}) == 16
        for i, node in enumerate(nodes):
            answer = node.command(op="store", key=f"key-{i}", value={"stored_by": i}, ttl=600)
            assert answer["ok"], answer
        for reader in nodes:
            for i in range(len(nodes)):
                answer = reader.command(op="get", key=f"key-{i}")
                assert answer["found"] and answer["value"] == {"stored_by": i}, (reader.address, i, answer)

        victim = nodes[5]
        victim.kill()
        survivors = [node for node in nodes if node is not victim]
        for reader in survivors:
            for i in range(len(nodes)):
                answer = reader.command(op="get", key=f"key-{i}")
                assert answer["found"] and answer["value"] == {"stored_by": i}, (reader.address, i, answer)
        # New writes still replicate without the dead node.
        assert survivors[0].command(op="store", key="after-kill", value=1, ttl=600)["ok"]
        assert all(node.command(op="get", key="after-kill")["found"] for node in survivors)
