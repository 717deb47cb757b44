"""trio's stream contracts, checked on both of Tesseract's streams: TCP (``TCPStream``) and simulated.

``trio.testing.check_two_way_stream`` and ``check_half_closeable_stream`` state what a trio byte stream
promises (argument checks, close and cancel semantics, conflicting calls, a 1 MiB duplex exchange).
Where a stream departs from them on purpose, its check is a strict xfail whose reason says why, and
narrowed with ``raises`` where the departure fails in a known way: a departure that goes away, or a
check that fails for another reason, fails the test. Each check stops at the first departure it meets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from tesseract.net.host import Stream
from tests.worlds import RealWorld, SimWorld, World

PairMaker = Callable[[], Awaitable[tuple[trio.abc.Stream, trio.abc.Stream]]]
#: Wall time for a check over loopback (it takes well under a second); virtual time in the simulator.
DEADLINE_S = 5.0


class SendsNeverBlock(Exception):
    """A sender went on sending while nothing was received on its connection (the watchdog's verdict)."""


class Watchdog:
    """Turns a sender that can never block into an error rather than an endless loop.

    In the simulator a task that never blocks stops virtual time, so without this a check that sends
    until the peer's close is noticed would spin forever instead of failing.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.sends = 0

    def sent(self) -> None:
        self.sends += 1
        if self.sends > self.limit:
            raise SendsNeverBlock(f"{self.limit} sends in a row and nothing received")

    def received(self) -> None:
        self.sends = 0


class ScheduledView(trio.abc.Stream):
    """A stream with a checkpoint added to each ``send_all`` and ``receive_some``, nothing else changed.

    Both streams skip the scheduler when a call can complete at once, on purpose (see
    ``test_a_call_that_can_complete_at_once_skips_the_scheduler``), and trio's checks require every call
    to be a checkpoint; this view adds what that departure leaves out, so the rest of the contract
    still gets checked against the real stream underneath.
    """

    def __init__(self, stream: Stream, watchdog: Watchdog | None) -> None:
        self._stream = stream
        self._watchdog = watchdog

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._watchdog is not None:
            self._watchdog.sent()
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._stream.send_all(data)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._watchdog is not None:
            self._watchdog.received()
        await trio.lowlevel.checkpoint_if_cancelled()
        data = await self._stream.receive_some(max_bytes)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


async def connection_maker(world: World) -> Callable[[], Awaitable[tuple[Stream, Stream]]]:
    """Two hosts; each call of the returned function opens a new connection: (client end, server end)."""
    server, client = await world.new_host(), await world.new_host()
    accepted_in, accepted = trio.open_memory_channel[Stream](1)

    async def handler(stream: Stream) -> None:
        await accepted_in.send(stream)
        await trio.sleep_forever()  # the check closes the stream; the handler must not

    world.start(server, server.transport.serve_streams, handler)
    await trio.sleep(0.05)

    async def connect() -> tuple[Stream, Stream]:
        client_end = await client.transport.open_stream(server.address)
        return client_end, await accepted.receive()

    return connect


def scheduled(connect: Callable[[], Awaitable[tuple[Stream, Stream]]], *, watchdog: bool) -> PairMaker:
    async def pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        shared = Watchdog() if watchdog else None
        a, b = await connect()
        return ScheduledView(a, shared), ScheduledView(b, shared)

    return pair


def clogged(make_pair: PairMaker) -> PairMaker:
    """Pairs whose send buffers are full both ways, so ``send_all`` blocks until the peer reads."""

    async def pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        a, b = await make_pair()

        async def fill(stream: trio.abc.Stream) -> None:
            while True:
                await stream.send_all(b"x" * 10_000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fill, a)
            nursery.start_soon(fill, b)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        return a, b

    return pair


SKIPS_THE_SCHEDULER = (
    "on purpose: a send_all (and, in the simulator, a receive_some) that can complete at once returns "
    "without a schedule point; a scheduler pass per send costs ~10% of a small RPC's round trip over "
    "TCP, and in the simulator it would reorder every run (every trace hash would change)"
)
SIM_UNBOUNDED_BUFFER = (
    "on purpose: a simulated link buffers without bound, so send_all never blocks, and virtual time "
    "moves only when every task is blocked; a sender that only sends (the check sends until the "
    "peer's close is noticed) therefore never lets the close arrive, and a close arrives as an end of "
    "stream, never as a reset, so sending on never fails"
)
NOT_HALF_CLOSEABLE = (
    "on purpose: Tesseract's Stream is a trio.abc.Stream, not a HalfCloseableStream: there is no "
    "send_eof, a connection is closed whole (RPC never half-closes), so this check cannot pass"
)


def _worlds(real_mark: pytest.MarkDecorator | list, sim_mark: pytest.MarkDecorator | list) -> list:
    return [
        pytest.param(RealWorld, id="real", marks=real_mark),
        pytest.param(lambda: SimWorld(seed=7), id="sim", marks=sim_mark),
    ]


def sole_error(error: BaseException) -> BaseException:
    """The one exception inside nested one-member groups (what ``xfail(raises=...)`` can look at)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def run_check(world: World, check: Callable[[World], Awaitable[None]]) -> None:
    async def main(world: World) -> None:
        with trio.fail_after(DEADLINE_S):
            await check(world)

    try:
        world.run(main)
    except BaseExceptionGroup as group:
        raise sole_error(group) from None


@pytest.mark.parametrize(
    "make_world",
    _worlds(
        [],
        pytest.mark.xfail(strict=True, raises=SendsNeverBlock, reason=SIM_UNBOUNDED_BUFFER),
    ),
)
def test_two_way_stream_contract(make_world: Callable[[], World]) -> None:
    world = make_world()

    async def check(world: World) -> None:
        make_pair = scheduled(await connection_maker(world), watchdog=isinstance(world, SimWorld))
        # A simulated link never fills, so the simulator has no clogged state to offer.
        clogged_pair = clogged(make_pair) if isinstance(world, RealWorld) else None
        await trio.testing.check_two_way_stream(make_pair, clogged_pair)

    run_check(world, check)


@pytest.mark.parametrize(
    "make_world",
    _worlds(
        pytest.mark.xfail(strict=True, raises=AssertionError, reason=SKIPS_THE_SCHEDULER),
        pytest.mark.xfail(strict=True, raises=AssertionError, reason=SKIPS_THE_SCHEDULER),
    ),
)
def test_a_call_that_can_complete_at_once_skips_the_scheduler(make_world: Callable[[], World]) -> None:
    """The streams as they are: the check's first step, one send_all, must be a checkpoint."""
    world = make_world()

    async def check(world: World) -> None:
        await trio.testing.check_two_way_stream(await connection_maker(world), None)

    run_check(world, check)


@pytest.mark.parametrize(
    "make_world",
    _worlds(
        pytest.mark.xfail(strict=True, reason=NOT_HALF_CLOSEABLE),
        pytest.mark.xfail(strict=True, reason=NOT_HALF_CLOSEABLE),
    ),
)
def test_half_closeable_stream_contract(make_world: Callable[[], World]) -> None:
    world = make_world()

    async def check(world: World) -> None:
        make_pair = scheduled(await connection_maker(world), watchdog=isinstance(world, SimWorld))
        await trio.testing.check_half_closeable_stream(make_pair, None)

    run_check(world, check)


@pytest.mark.parametrize(
    "make_world",
    _worlds(
        [],
        [],
    ),
)
def test_every_call_on_a_closed_stream_raises_closed_resource_error(make_world: Callable[[], World]) -> None:
    """trio's rule, extended to ``receive_into`` (Tesseract's addition to the stream interface)."""
    world = make_world()

    async def check(world: World) -> None:
        stream, _ = await (await connection_maker(world))()
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"late")
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_into(memoryview(bytearray(4)))

    run_check(world, check)
