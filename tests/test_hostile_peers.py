"""Peers that claim much and send little, trickle, idle, or flood: each costs bounded memory and
descriptors, and honest peers keep being served. Run over real loopback and in the simulator."""

from __future__ import annotations

import os

import pytest
import torch
import trio

from tesseract.net import (
    CallTimeout,
    RemoteError,
    RPCClient,
    RPCServer,
    ServerLimits,
    deserialize_tensor,
    serialize_tensor,
)
from tesseract.net.framing import GROWTH, MIN_GROWTH, FrameReader
from tesseract.net.host import Host, Stream
from tesseract.net.messages import FRAME_HEADER, WIRE_VERSION, ErrorReply, Request, encode_frame, split_body
from tests.service import Add, Empty, Scale, Sleep, Sum, Tensor, make_router
from tests.worlds import SimWorld, World

MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def header(claimed: int) -> bytes:
    return FRAME_HEADER.pack(claimed, WIRE_VERSION, 0)


async def start_server(world: World, limits: ServerLimits, **options) -> tuple[Host, RPCServer]:
    host = await world.new_host()
    server = RPCServer(host, make_router(), limits=limits, **options)
    world.start(host, server.serve)
    await trio.sleep(0.05)
    return host, server


async def served(client: RPCClient, address: str, value: int = 1) -> bool:
    reply = await client.call(address, "add", Add(value, 1), Sum, timeout=5)
    return reply.value == value + 1


async def closed_by_server(stream: Stream, within: float) -> list[str]:
    """Read until the server closes the stream; return the codes of the error replies it sent."""
    codes: list[str] = []
    reader = FrameReader(stream)
    with trio.fail_after(within):
        try:
            while (frame := await reader.receive_frame()) is not None:
                envelope, _ = split_body(memoryview(frame.body), frame.envelope_size)
                assert isinstance(envelope, ErrorReply)
                codes.append(envelope.code)
        except trio.BrokenResourceError:
            pass
    return codes


async def wait_until(predicate, within: float = 10.0) -> None:
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(0.01)


def test_unfinished_frames_of_all_connections_share_one_budget(world: World) -> None:
    """Defect 1: twenty connections that each begin a 100 MiB frame hold the budget's worth between
    them, not 2 GB; those beyond it wait (reading nothing), and an honest peer is served."""
    budget = 2 * MiB
    sent_each = 300 * 1024

    async def main(world: World) -> None:
        host, server = await start_server(world, ServerLimits(buffer_budget=budget))
        attacker = await world.new_host()
        streams = [await attacker.transport.open_stream(host.address) for _ in range(20)]

        async def send(stream: Stream) -> None:
            # Those that wait for budget read nothing: their sends block once the kernel's buffers fill.
            await stream.send_all(header(100 * MiB) + b"\0" * sent_each)

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(send, stream)
            await wait_until(lambda: server.budget.waiting > 0)
            await trio.sleep(0.2)
            # One frame (the oldest) may always grow; everyone else stays within the budget.
            assert server.budget.used <= budget + GROWTH * (sent_each + MIN_GROWTH)
            async with RPCClient(await world.new_host()) as client:
                assert await served(client, host.address)
            nursery.cancel_scope.cancel()
        for stream in streams:
            await stream.aclose()
        await wait_until(lambda: server.budget.used == 0)

    world.run(main)


def test_honest_large_frames_through_a_small_budget_all_complete(world: World) -> None:
    """Frames that wait for each other's budget never deadlock: the oldest always proceeds."""

    async def main(world: World) -> None:
        host, server = await start_server(world, ServerLimits(buffer_budget=MiB))
        results: list[bool] = []

        async def one(seed: int) -> None:
            x = torch.randn(3 * MiB // 4, generator=torch.Generator().manual_seed(seed))  # 3 MiB
            async with RPCClient(await world.new_host(), buffer_budget=MiB) as client:
                request = Scale(serialize_tensor(x))
                reply = await client.call(host.address, "scale", request, Tensor, timeout=60)
                results.append(torch.equal(deserialize_tensor(reply.tensor), x * 2))

        async with trio.open_nursery() as nursery:
            for seed in range(6):
                nursery.start_soon(one, seed)
        assert results == [True] * 6
        # Six 3 MiB frames at once: the budget, plus the one frame that may always grow.
        assert server.budget.peak <= MiB + 3 * MiB + GROWTH * MIN_GROWTH
        assert server.budget.used == 0

    world.run(main)


def test_a_frame_that_trickles_is_closed_at_its_deadline(world: World) -> None:
    """Defect 2 (slowloris): a frame that has begun must complete within its deadline, however
    steadily its bytes trickle in."""

    async def main(world: World) -> None:
        limits = ServerLimits(frame_timeout=1.0, min_frame_rate=MiB)
        host, server = await start_server(world, limits)
        attacker = await world.new_host()
        stream = await attacker.transport.open_stream(host.address)
        frame = bytes(encode_frame(Request(1, "add", 5.0), Add(1, 2), max_frame_size=MiB))
        started = trio.current_time()

        async def trickle() -> None:
            for byte in frame[:-1]:
                try:
                    await stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                await trio.sleep(0.3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            codes = await closed_by_server(stream, within=5)
            nursery.cancel_scope.cancel()
        assert codes == ["protocol_error"]
        assert 1.0 <= trio.current_time() - started < 3.0
        assert server.stats["frame_timeouts"] == 1
        await stream.aclose()
        async with RPCClient(await world.new_host()) as client:
            assert await served(client, host.address)

    world.run(main)


def test_a_header_that_claims_much_buys_no_time(world: World) -> None:
    """Only bytes that arrived extend a frame's deadline: a header claiming 255 MiB, then silence,
    holds its connection (which is never idle, so never shed) for ``frame_timeout``, not the 256 s
    that 255 MiB would take at ``min_frame_rate``."""

    async def main(world: World) -> None:
        host, server = await start_server(world, ServerLimits(frame_timeout=1.0, min_frame_rate=MiB))
        attacker = await world.new_host()
        stream = await attacker.transport.open_stream(host.address)
        await stream.send_all(header(255 * MiB))
        started = trio.current_time()
        assert await closed_by_server(stream, within=30) == ["protocol_error"]
        assert 1.0 <= trio.current_time() - started < 8.0
        assert server.stats["frame_timeouts"] == 1
        await stream.aclose()

    world.run(main)


def test_idle_connections_are_closed_but_never_with_a_request_in_flight(world: World) -> None:
    async def main(world: World) -> None:
        host, server = await start_server(world, ServerLimits(idle_timeout=1.0))
        peer = await world.new_host()
        idle = await peer.transport.open_stream(host.address)
        started = trio.current_time()
        assert await closed_by_server(idle, within=5) == []
        assert 1.0 <= trio.current_time() - started < 3.0
        assert server.stats["connections_idle"] == 1
        await idle.aclose()
        # A request that runs longer than the idle timeout keeps its connection.
        async with RPCClient(peer) as client:
            await client.call(host.address, "sleep", Sleep(2.5), Empty, timeout=10)

    world.run(main)


def test_connection_caps_shed_the_newest_idle_and_never_a_busy_one() -> None:
    """Defect 2: a flood of connections from one address takes at most its share; connections from
    many addresses past the total cap displace the newest idle ones; honest peers are served
    throughout and a connection with a request in flight is never shed."""
    world = SimWorld(seed=3)

    async def main(world: World) -> None:
        limits = ServerLimits(max_connections=10, max_connections_per_address=4)
        host, server = await start_server(world, limits)
        flooder = await world.new_host()
        flood = [await flooder.transport.open_stream(host.address) for _ in range(20)]
        await trio.sleep(0.5)
        assert server.admission.count(flooder.address.rsplit(":", 1)[0]) == 4
        assert server.stats["connections_refused"] == 16
        refused = await closed_by_server(flood[-1], within=2)
        assert refused == ["overloaded"]

        # A busy connection: one request in flight for the rest of the test.
        async with RPCClient(await world.new_host()) as busy_client, trio.open_nursery() as nursery:

            async def long_call() -> None:
                await busy_client.call(host.address, "sleep", Sleep(3.0), Empty, timeout=10)

            nursery.start_soon(long_call)
            await trio.sleep(0.1)
            others = [await world.new_host() for _ in range(4)]
            for other in others:
                for _ in range(4):
                    await other.transport.open_stream(host.address)
            await trio.sleep(0.5)
            assert len(server.admission) == 10
            assert server.stats["connections_shed"] == 4 + 1 + 16 - 10
            async with RPCClient(await world.new_host()) as honest:
                with trio.fail_after(1):
                    assert await served(honest, host.address)
        # The busy connection finished its call: it was never shed.

    world.run(main)


class _Hostile:
    """A fake expert that answers any request with a header claiming ``claimed`` bytes, then nothing."""

    def __init__(self, claimed: int) -> None:
        self.claimed = claimed

    async def handle(self, stream: Stream) -> None:
        reader = FrameReader(stream)
        if await reader.receive_frame() is None:
            return
        await stream.send_all(header(self.claimed) + b"\1" * 1000)
        await trio.sleep_forever()


def test_a_client_facing_a_reply_that_claims_255_mib_then_stalls(world: World) -> None:
    """Defect 13: the client's side costs what the hostile peers sent, and each call ends with
    CallTimeout at its deadline."""

    async def main(world: World) -> None:
        hostiles = []
        for _ in range(4):
            host = await world.new_host()
            world.start(host, host.transport.serve_streams, _Hostile(255 * MiB).handle)
            hostiles.append(host)
        await trio.sleep(0.05)
        resident_before = rss()
        async with RPCClient(await world.new_host()) as client:
            outcomes: list[tuple[type, float]] = []

            async def call(address: str) -> None:
                started = trio.current_time()
                try:
                    await client.call(address, "add", Add(1, 2), Sum, timeout=1.0)
                except (CallTimeout, RemoteError) as exc:
                    outcomes.append((type(exc), trio.current_time() - started))

            async with trio.open_nursery() as nursery:
                for host in hostiles:
                    nursery.start_soon(call, host.address)
            assert [kind for kind, _ in outcomes] == [CallTimeout] * 4
            assert all(1.0 <= elapsed < 2.0 for _, elapsed in outcomes)
            assert client.budget.peak <= 4 * GROWTH * (1000 + MIN_GROWTH)
            assert rss() - resident_before < 128 * MiB  # the replies' claims were 1 GiB in all

    world.run(main)


def test_the_budget_rule_lets_the_oldest_frame_grow_and_makes_the_others_wait() -> None:
    from tesseract.net import BufferBudget

    budget = BufferBudget(100)
    first, second, third = object(), object(), object()
    assert budget.try_acquire(first, 60) and budget.try_acquire(second, 40)
    assert not budget.try_acquire(second, 1)  # full, and second is not the oldest
    assert budget.try_acquire(first, 1000)  # the oldest never waits
    assert budget.used == 1100 and budget.peak == 1100
    budget.release(first)
    assert budget.try_acquire(second, 500)  # second is the oldest now
    assert not budget.try_acquire(third, 1)
    budget.release(second, 500)
    assert budget.held(second) == 40 and budget.try_acquire(third, 60)
    assert not budget.try_acquire(third, 1)  # second, still holding, stays the oldest
    budget.release(second)
    budget.release(third)
    assert budget.used == 0
    with pytest.raises(ValueError):
        BufferBudget(-1)


def test_a_waiting_holder_proceeds_once_enough_is_released() -> None:
    from tesseract.net import BufferBudget

    async def main() -> None:
        budget = BufferBudget(10)
        first, second = object(), object()
        assert budget.try_acquire(first, 10)
        got = trio.Event()

        async def wait_for_it() -> None:
            await budget.acquire(second, 5)
            got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_it)
            await trio.testing.wait_all_tasks_blocked()
            assert budget.waiting == 1 and not got.is_set()
            budget.release(first, 4)
            await trio.testing.wait_all_tasks_blocked()
            assert not got.is_set()  # 6 + 5 > 10
            budget.release(first)
            await got.wait()
        assert budget.held(second) == 5 and budget.used == 5

    trio.run(main)
