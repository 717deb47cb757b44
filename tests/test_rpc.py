"""Stream RPC, run over real loopback sockets and in the simulator through one fixture."""

from __future__ import annotations

import random

import pytest
import torch
import trio

from tesseract.net import (
    CallTimeout,
    PeerUnavailable,
    RemoteError,
    RPCClient,
    RPCServer,
    deserialize_tensor,
    serialize_tensor,
)
from tests.service import Add, Empty, Scale, Sleep, SlowAdd, Sum, Tensor, make_router
from tests.worlds import World


async def start_server(world: World, **options) -> tuple:
    host = await world.new_host()
    server = RPCServer(host, make_router(), **options)

    async def serve() -> None:
        await server.serve()

    world.start(host, serve)
    await trio.sleep(0.05)
    return host, server


def test_tensor_echo_and_many_concurrent_calls_share_one_connection(world: World) -> None:
    async def main(world: World) -> None:
        server_host, _ = await start_server(world)
        client_host = await world.new_host()
        async with RPCClient(client_host) as client:
            reply = await client.call(
                server_host.address,
                "scale",
                Scale(serialize_tensor(torch.arange(6.0).view(2, 3))),
                Tensor,
                timeout=5,
            )
            assert torch.equal(deserialize_tensor(reply.tensor), torch.arange(6.0).view(2, 3) * 2)

            results: dict[int, int] = {}

            async def one(i: int) -> None:
                results[i] = (
                    await client.call(server_host.address, "add", Add(i, 1000), Sum, timeout=5)
                ).value

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
            assert results == {i: i + 1000 for i in range(200)}
            assert len(client._connections) == 1

    world.run(main)


def test_typed_errors_reach_the_caller(world: World) -> None:
    async def main(world: World) -> None:
        server_host, server = await start_server(world)
        async with RPCClient(await world.new_host()) as client:
            address = server_host.address
            with pytest.raises(RemoteError) as info:
                await client.call(address, "no_such_method", Empty(), Empty, timeout=5)
            assert info.value.code == "unknown_method"
            with pytest.raises(RemoteError) as info:
                await client.call(address, "fail", Empty(), Empty, timeout=5)
            assert info.value.code == "internal" and "divided by zero" in info.value.message
            with pytest.raises(RemoteError) as info:
                await client.call(address, "refuse", Empty(), Empty, timeout=5)
            assert info.value.code == "bad_request" and "on purpose" in info.value.message
            # A payload of the wrong type for the method: the server names the mismatch.
            with pytest.raises(RemoteError) as info:
                await client.call(address, "add", Sleep(1.0), Sum, timeout=5)
            assert info.value.code == "bad_request"
            assert server.stats["unknown_method"] == 1 and server.stats["bad_request"] == 2
            # The connection survived all of that.
            assert (await client.call(address, "add", Add(2, 3), Sum, timeout=5)).value == 5

    world.run(main)


def test_deadlines_on_both_sides(world: World) -> None:
    async def main(world: World) -> None:
        server_host, server = await start_server(world)
        async with RPCClient(await world.new_host()) as client:
            started = trio.current_time()
            with pytest.raises(CallTimeout):
                await client.call(server_host.address, "sleep", Sleep(30.0), Empty, timeout=0.3)
            assert trio.current_time() - started < 2.0
            # The server stops the handler at the deadline the request carried.
            with trio.fail_after(5):
                while server.stats["deadline_exceeded"] < 1:
                    await trio.sleep(0.05)
            # Other calls on the same connection were never disturbed.
            assert (await client.call(server_host.address, "add", Add(1, 1), Sum, timeout=5)).value == 2

    world.run(main)


def test_unreachable_peer_is_a_clear_error(world: World) -> None:
    async def main(world: World) -> None:
        dead = await world.new_host()
        address = dead.address
        await world.crash(dead)
        async with RPCClient(await world.new_host()) as client:
            # A refused connection is a refusal, known at once: never a wait for the deadline.
            started = trio.current_time()
            with pytest.raises(PeerUnavailable):
                await client.call(address, "add", Add(1, 1), Sum, timeout=2)
            assert trio.current_time() - started < 1

    world.run(main)


def test_reconnects_after_the_peer_restarts(world: World) -> None:
    async def main(world: World) -> None:
        server_host, _ = await start_server(world)
        address = server_host.address
        async with RPCClient(await world.new_host()) as client:
            assert (await client.call(address, "add", Add(1, 2), Sum, timeout=5)).value == 3
            await world.crash(server_host)
            with pytest.raises(PeerUnavailable):
                await client.call(address, "add", Add(1, 2), Sum, timeout=1)
            restarted = await world.restart(server_host)
            world.start(restarted, RPCServer(restarted, make_router()).serve)
            await trio.sleep(0.05)
            assert (await client.call(address, "add", Add(3, 4), Sum, timeout=5)).value == 7

    world.run(main)


def test_in_flight_calls_fail_fast_when_the_server_dies(world: World) -> None:
    async def main(world: World) -> None:
        server_host, _ = await start_server(world)
        async with RPCClient(await world.new_host()) as client:
            failures: list[BaseException] = []

            async def slow_call() -> None:
                try:
                    await client.call(server_host.address, "sleep", Sleep(60.0), Empty, timeout=30)
                except PeerUnavailable as exc:
                    failures.append(exc)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(slow_call)
                await trio.sleep(0.2)
                await world.crash(server_host)
            assert len(failures) == 5
            assert trio.current_time() - started < 5

    world.run(main)


def test_inflight_limit_answers_overloaded(world: World) -> None:
    async def main(world: World) -> None:
        server_host, server = await start_server(world, max_inflight_per_connection=4)
        async with RPCClient(await world.new_host()) as client:
            outcomes: list[str] = []

            async def call() -> None:
                try:
                    await client.call(server_host.address, "sleep", Sleep(0.2), Empty, timeout=5)
                    outcomes.append("ok")
                except RemoteError as exc:
                    outcomes.append(exc.code)

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(call)
            assert outcomes.count("ok") == 4 and outcomes.count("overloaded") == 6
            assert server.stats["overloaded"] == 6

    world.run(main)


def test_misbehaving_handlers_cannot_take_the_server_down(world: World) -> None:
    from tesseract.net import DatagramRPC, Router

    router = make_router()

    async def unencodable(request: Empty, peer: str) -> object:
        return object()  # msgspec cannot encode this

    async def odd_code(request: Empty, peer: str) -> Empty:
        raise RemoteError("not_a_known_code", "relayed from somewhere else")

    router.add("unencodable", Empty, unencodable)
    router.add("odd_code", Empty, odd_code)

    async def main(world: World) -> None:
        server_host = await world.new_host()
        world.start(server_host, RPCServer(server_host, router).serve)
        datagrams = DatagramRPC(server_host, router)
        world.start(server_host, datagrams.serve)
        client_host = await world.new_host()
        client_datagrams = DatagramRPC(client_host, Router())
        world.start(client_host, client_datagrams.serve)
        await trio.sleep(0.05)
        async with RPCClient(client_host) as client:
            for method in ("unencodable", "odd_code"):
                with pytest.raises(RemoteError) as info:
                    await client.call(server_host.address, method, Empty(), Empty, timeout=5)
                assert info.value.code == "internal"
                with pytest.raises(RemoteError) as info:
                    await client_datagrams.call(server_host.address, method, Empty(), Empty, timeout=2)
                assert info.value.code == "internal"
            assert (await client.call(server_host.address, "add", Add(1, 1), Sum, timeout=5)).value == 2
            assert (
                await client_datagrams.call(server_host.address, "add", Add(1, 2), Sum, timeout=2)
            ).value == 3

    world.run(main)


def test_timed_out_calls_leave_nothing_behind(world: World) -> None:
    async def main(world: World) -> None:
        server_host, _ = await start_server(world)
        async with RPCClient(await world.new_host()) as client:
            for _ in range(20):
                with pytest.raises(CallTimeout):
                    await client.call(server_host.address, "sleep", Sleep(30.0), Empty, timeout=0.05)
            (connection,) = client._connections.values()
            assert connection.pending == {}
            assert (await client.call(server_host.address, "add", Add(1, 1), Sum, timeout=5)).value == 2

    world.run(main)


def test_calls_take_turns_reading_and_none_loses_or_mixes_a_reply(world: World) -> None:
    """Concurrent calls on one connection read it in turn (a call reads until its own reply comes, then
    hands the reading on; between calls a background task reads). Calls that time out, or are
    cancelled while they read or wait, hand it on too: every other call gets exactly its own reply."""

    async def main(world: World) -> None:
        server_host, _ = await start_server(world)
        address = server_host.address
        rng = random.Random(5)
        answered: dict[int, int] = {}
        timed_out: set[int] = set()
        cancelled: set[int] = set()
        async with RPCClient(await world.new_host()) as client:

            async def one(i: int, delay: float, timeout: float, cancel_after: float | None) -> None:
                with trio.move_on_after(cancel_after if cancel_after is not None else float("inf")):
                    try:
                        reply = await client.call(
                            address, "slow_add", SlowAdd(i, 7, delay), Sum, timeout=timeout
                        )
                        answered[i] = reply.value
                    except CallTimeout:
                        timed_out.add(i)
                    return
                cancelled.add(i)

            calls = 0
            for _ in range(5):
                async with trio.open_nursery() as nursery:
                    for _ in range(80):
                        delay = rng.choice([0.0, 0.0, 0.002, 0.02, 0.06])
                        timeout = rng.choice([5.0, 5.0, 0.03])
                        cancel_after = rng.choice([None, None, None, 0.0, 0.001, 0.01])
                        nursery.start_soon(one, calls, delay, timeout, cancel_after)
                        calls += 1
                        if rng.random() < 0.3:
                            await trio.sleep(0)
                await trio.sleep(0.1)  # idle: the background task takes the reading back
            assert all(value == i + 7 for i, value in answered.items())
            assert len(answered) + len(timed_out) + len(cancelled) == calls
            assert len(answered) > calls // 3 and timed_out and cancelled
            # (A call cancelled in the middle of its frame retires its connection: a new one follows.)
            assert all(connection.pending == {} for connection in client._connections.values())
            assert (await client.call(address, "add", Add(2, 3), Sum, timeout=5)).value == 5

    world.run(main)
