"""The virtual network: determinism, the link model, faults, compute in virtual time."""

from __future__ import annotations

import ast
import contextlib
import functools
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trio
from hypothesis import given
from hypothesis import strategies as st

from simulator import DeviceProfile, HostCrashed, SimNetwork, SimulationDeadlock, Uniform, run_simulation
from simulator.determinism import check_trio_internals
from tesseract.net import CallTimeout, DatagramRPC, PeerUnavailable, RemoteError, Router, RPCClient, RPCServer
from tests.service import Add, Sum, make_router
from tests.sim_workload import busy_swarm_trace

ROOT = Path(__file__).resolve().parent.parent


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    first, delivered = busy_swarm_trace(seed=11)
    assert delivered > 1000
    assert busy_swarm_trace(seed=11) == (first, delivered)
    assert busy_swarm_trace(seed=12)[0] != first


def test_trace_does_not_depend_on_the_process_or_its_hash_seed() -> None:
    """Bit-for-bit across processes: catches iteration over sets or ids leaking into the schedule."""
    expected = busy_swarm_trace(seed=5)
    for hash_seed in ("1", "2"):
        output = subprocess.run(
            [sys.executable, "-m", "tests.sim_workload", "5"],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert (output[0], int(output[1])) == expected


def test_trio_internals_the_simulator_relies_on_exist() -> None:
    check_trio_internals()


def test_the_simulator_modules_import_one_way() -> None:
    """No cycle among simulator/*.py, counting imports made only for type checking or inside functions."""
    package = ROOT / "simulator"
    modules = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "simulator":
                imported |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simulator."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("simulator.")}
        graph[path.stem] = imported - {path.stem}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError, naming the cycle


async def _serve(host) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(RPCServer(host, make_router()).serve)
        await nursery.start(DatagramRPC(host, make_router()).serve)


def test_latency_is_what_the_link_says() -> None:
    async def main(network: SimNetwork) -> None:
        a, b, c = network.add_hosts(3)
        network.set_link(a.address, c.address, latency=0.2)
        b.start(_serve, b)
        c.start(_serve, c)
        async with RPCClient(a) as client:
            await client.call(b.address, "add", Add(1, 1), Sum, timeout=5)  # connect first
            started = trio.current_time()
            await client.call(b.address, "add", Add(1, 1), Sum, timeout=5)
            assert trio.current_time() - started == pytest.approx(0.1, abs=0.002)
            await client.call(c.address, "add", Add(1, 1), Sum, timeout=5)
            started = trio.current_time()
            await client.call(c.address, "add", Add(1, 1), Sum, timeout=5)
            assert trio.current_time() - started == pytest.approx(0.4, abs=0.002)

    run_simulation(main, latency=0.05)


def test_bandwidth_delays_large_messages() -> None:
    async def main(network: SimNetwork) -> None:
        a, b = network.add_hosts(2)
        got = trio.Event()

        async def sink(stream) -> None:
            received = 0
            while data := await stream.receive_some():
                received += len(data)
                if received >= 2_000_000:
                    got.set()

        b.start(b.transport.serve_streams, sink)
        await trio.sleep(0.1)
        stream = await a.transport.open_stream(b.address)
        started = trio.current_time()
        await stream.send_all(b"x" * 1_000_000)
        await stream.send_all(b"y" * 1_000_000)  # queues behind the first on the same link
        await got.wait()
        assert trio.current_time() - started == pytest.approx(2.0 + 0.01, abs=0.002)

    run_simulation(main, latency=0.01, bandwidth=1e6)


def test_datagram_loss_rate() -> None:
    async def main(network: SimNetwork) -> int:
        a, b = network.add_hosts(2)
        for _ in range(2000):
            await a.transport.send_datagram(b.address, b"x")
        await trio.sleep(1)
        return len(b.inbox.items)

    received = run_simulation(main, loss=0.25, seed=1)
    assert 1400 < received < 1600


def test_partition_drops_datagrams_and_holds_stream_data_until_heal() -> None:
    async def main(network: SimNetwork) -> None:
        a, b, c = network.add_hosts(3)
        received: list[bytes] = []

        async def sink(stream) -> None:
            while data := await stream.receive_some():
                received.append(data)

        b.start(b.transport.serve_streams, sink)
        await trio.sleep(0.1)
        stream = await a.transport.open_stream(b.address)
        network.partition([a.address], [b.address, c.address])
        await stream.send_all(b"held")
        await a.transport.send_datagram(b.address, b"lost")
        await c.transport.send_datagram(b.address, b"same side")
        await trio.sleep(1)
        assert received == [] and [d for d, _ in b.inbox.items] == [b"same side"]
        # The partition swallows the SYN and nothing answers (no refusal crosses it, as no RST crosses
        # a real one), so only the caller's own deadline can end the attempt.
        with pytest.raises(trio.TooSlowError), trio.fail_after(1):
            await a.transport.open_stream(b.address)
        network.heal()
        await trio.sleep(0.1)
        assert received == [b"held"]

    run_simulation(main, latency=0.01)


def test_crash_resets_connections_cancels_tasks_and_restart_comes_back() -> None:
    async def main(network: SimNetwork) -> None:
        a, b = network.add_hosts(2)
        cancelled = []

        async def node() -> None:
            try:
                await _serve(b)
            finally:
                cancelled.append(True)

        b.start(node)
        await trio.sleep(0.1)
        stream = await a.transport.open_stream(b.address)
        b.crash()
        await trio.sleep(0.1)
        assert cancelled == [True]
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        with pytest.raises(PeerUnavailable, match="refused"):
            await a.transport.open_stream(b.address)
        with pytest.raises(HostCrashed):
            await b.transport.send_datagram(a.address, b"from the dead")
        b.restart()
        b.start(_serve, b)
        await trio.sleep(0.1)
        async with RPCClient(a) as client:
            assert (await client.call(b.address, "add", Add(2, 2), Sum, timeout=5)).value == 4

    run_simulation(main, latency=0.01)


def test_a_run_that_can_never_progress_is_reported() -> None:
    async def main(network: SimNetwork) -> None:
        a = network.add_host()
        await a.transport.receive_datagram()  # nobody will ever send one, and no timer is set

    with pytest.raises(BaseExceptionGroup) as info:
        run_simulation(main)
    assert info.group_contains(SimulationDeadlock)


def test_helper_threads_leave_ctrl_c_to_the_main_thread() -> None:
    """A signal that a helper thread takes does not wake a main thread blocked on it (the loop waits
    for a compute in a worker, a launcher for its child): the helpers block SIGINT and SIGTERM."""
    import signal

    from tesseract.net.real import BackgroundLoop

    async def main(network: SimNetwork) -> set[signal.Signals]:
        return await network.add_host().compute(signal.pthread_sigmask, signal.SIG_BLOCK, [])

    assert {signal.SIGINT, signal.SIGTERM} <= run_simulation(main, SimNetwork(seed=1))

    @contextlib.asynccontextmanager
    async def the_loops_mask():
        yield signal.pthread_sigmask(signal.SIG_BLOCK, [])

    with BackgroundLoop(the_loops_mask, name="test-loop") as mask:
        assert {signal.SIGINT, signal.SIGTERM} <= mask
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the caller's is untouched


def test_a_compute_worker_keeps_nothing_of_a_finished_job() -> None:
    """Idle worker threads once held their last job's result until their next job: a crashed
    trainer's error, whose traceback held its whole batch, stayed alive in each of them."""
    import gc
    import time
    import weakref

    class Batch:
        pass

    held: list[weakref.ref] = []

    def step() -> None:
        batch = Batch()  # a local: the traceback keeps it
        held.append(weakref.ref(batch))
        raise ValueError("the step failed")

    async def main(network: SimNetwork) -> None:
        with pytest.raises(ValueError):
            await network.add_host().compute(step)

    run_simulation(main, SimNetwork(seed=1))
    deadline = time.monotonic() + 5
    while held[0]() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert held[0]() is None


def test_compute_charges_virtual_time_and_can_call_the_network_from_sync_code() -> None:
    async def main(network: SimNetwork) -> tuple[float, float, int]:
        trainer, server = (
            network.add_host(profile=DeviceProfile(flops_per_s=1e9, overhead_s=0.0)),
            network.add_host(),
        )
        server.start(_serve, server)
        await trio.sleep(0.1)
        async with RPCClient(trainer) as client:

            def training_step(x: torch.Tensor) -> int:
                y = (x * 2).sum()  # real torch work, while virtual time stands still
                call = functools.partial(client.call, timeout=5)
                remote = trainer.bridge.run(call, server.address, "add", Add(int(y), 1), Sum)
                return remote.value

            started = trio.current_time()
            value = await trainer.compute(training_step, torch.ones(10))
            await trainer.compute(lambda: None, flops=5e8)  # its cost, announced
            # Work announced with flops runs on the loop's thread: it cannot call the network.
            with pytest.raises(RuntimeError, match="not in work announced with flops"):
                await trainer.compute(training_step, torch.ones(10), flops=5e8)
            return trio.current_time() - started, 0.0, value

    elapsed, _, value = run_simulation(main, latency=0.01)
    assert value == 21
    # connect (2 x 10 ms) + call (2 x 10 ms) + 0.5 s of charged compute (the refused one is charged
    # nothing: it failed before its end)
    assert elapsed == pytest.approx(0.54, abs=0.003)


def test_an_hour_of_virtual_time_passes_in_moments() -> None:
    async def main(network: SimNetwork) -> float:
        hosts = network.add_hosts(50)
        ticks = [0]

        async def heartbeat() -> None:
            while True:
                await trio.sleep(10)
                ticks[0] += 1

        for host in hosts:
            host.start(heartbeat)
        await trio.sleep(3605)  # off the beat: a tie at 3600 could go either way
        return ticks[0]

    assert run_simulation(main) == 50 * 360


@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.05, 0.3]),
    crash_times=st.lists(st.floats(0.0, 3.0), max_size=3),
    latency_high=st.floats(0.001, 0.2),
)
def test_rpc_under_random_latency_loss_and_crashes_is_right_or_fails_clearly(
    seed: int, loss: float, crash_times: list[float], latency_high: float
) -> None:
    """Every call returns the right answer or raises a clear error within its deadline; none hangs."""
    outcomes = {"ok": 0, "failed": 0}

    async def main(network: SimNetwork) -> None:
        servers = network.add_hosts(3)
        client_host = network.add_host()
        for server in servers:
            server.start(_serve, server)
        datagrams = DatagramRPC(client_host, Router())
        client_host.start(datagrams.serve)

        async def chaos() -> None:
            for when in sorted(crash_times):
                await trio.sleep_until(when)
                victim = servers[int(when * 1000) % len(servers)]
                victim.crash()
                await trio.sleep(0.2)
                victim.restart()
                victim.start(_serve, victim)

        async def caller(i: int, client: RPCClient) -> None:
            server = servers[i % len(servers)].address
            started = trio.current_time()
            try:
                if i % 2:
                    result = await client.call(server, "add", Add(i, 7), Sum, timeout=1.0)
                else:
                    result = await datagrams.call(server, "add", Add(i, 7), Sum, timeout=1.0)
                assert result.value == i + 7
                outcomes["ok"] += 1
            except (CallTimeout, PeerUnavailable):
                outcomes["failed"] += 1
            except RemoteError as exc:  # the one typed refusal this service can give: out of time
                assert exc.code == "deadline_exceeded", exc
                outcomes["failed"] += 1
            assert trio.current_time() - started <= 1.0 + 1e-9

        async with RPCClient(client_host) as client, trio.open_nursery() as nursery:
            nursery.start_soon(chaos)
            for i in range(60):
                nursery.start_soon(caller, i, client)
                await trio.sleep(0.05)

    run_simulation(main, seed=seed, latency=Uniform(0.0005, latency_high), loss=loss)
    assert outcomes["ok"] + outcomes["failed"] == 60
    if loss == 0.0 and not crash_times:
        assert outcomes["failed"] == 0
