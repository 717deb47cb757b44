"""Request/response RPC over datagrams (UDP in reality), for the DHT's small, frequent messages.

Each call sends one datagram and waits for one reply, resending on timeout (same request id, so a
late reply to the first try still counts). Replies are matched by id *and* sender address, so a
datagram spoofing another peer's reply is ignored. Handlers are the same ``Router`` as stream RPC.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any, TypeVar

import msgspec
import trio

from tesseract.net.errors import CallTimeout, ProtocolError, RemoteError
from tesseract.net.host import Host
from tesseract.net.messages import (
    ErrorCode,
    ErrorReply,
    Request,
    Response,
    decode_payload,
    encode_datagram,
    split_datagram,
)
from tesseract.net.observe import CallObserver, observed_call
from tesseract.net.router import Router, encode_reply

logger = logging.getLogger(__name__)

Resp = TypeVar("Resp")

DEFAULT_MAX_INFLIGHT = 1024


class _PendingDatagram:
    __slots__ = ("address", "done", "envelope", "payload")

    def __init__(self, address: str) -> None:
        self.address = address
        self.done = trio.Event()
        self.envelope: Response | ErrorReply | None = None
        self.payload: memoryview | None = None


class DatagramRPC:
    """Serves ``router`` on the host's datagram endpoint and makes calls from it.

    ``serve()`` must be running (in a nursery) for calls to receive their replies.
    """

    def __init__(self, host: Host, router: Router, *, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self.host = host
        self.router = router
        self.max_inflight = max_inflight
        self.max_size = host.transport.max_datagram_size
        self._pending: dict[int, _PendingDatagram] = {}
        self._ids = itertools.count(host.random.getrandbits(32))
        self._inflight = 0
        self.stats: Counter[str] = Counter()
        #: Told of every finished call (metrics); see ``tesseract.net.observe``.
        self.on_call: CallObserver | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        transport = self.host.transport
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                data, sender = await transport.receive_datagram()
                self._on_datagram(data, sender, nursery)

    def _on_datagram(self, data: bytes, sender: str, nursery: trio.Nursery) -> None:
        try:
            envelope, payload = split_datagram(data)
        except ProtocolError:
            self.stats["malformed"] += 1
            return  # no reply: an undecodable datagram may not even come from a Tesseract peer
        if isinstance(envelope, Request):
            if self._inflight >= self.max_inflight:
                self.stats[ErrorCode.OVERLOADED.value] += 1
                return  # shed load silently; the caller's retry or timeout handles it
            self._inflight += 1
            nursery.start_soon(self._answer, envelope, payload, sender)
            return
        pending = self._pending.get(envelope.id)
        if pending is None or pending.address != sender:
            self.stats["unmatched_replies"] += 1
            return
        del self._pending[envelope.id]
        pending.envelope, pending.payload = envelope, payload
        pending.done.set()

    async def _answer(self, request: Request, payload: memoryview, sender: str) -> None:
        try:
            envelope, result = await self.router.handle(request, payload, sender)
            reply = encode_reply(self.router, envelope, result, encode_datagram, max_size=self.max_size)
            await self.host.transport.send_datagram(sender, reply)
        finally:
            self._inflight -= 1

    async def call(
        self,
        address: str,
        method: str,
        request: Any,
        response_type: type[Resp],
        *,
        timeout: float,
        retries: int = 1,
    ) -> Resp:
        """Call ``method`` at ``address``; each of ``retries + 1`` tries gets an equal share of ``timeout``.

        Raises ``CallTimeout`` when no try is answered, ``RemoteError`` for a typed error reply.
        """
        if self.on_call is not None:
            return await observed_call(
                self.on_call,
                method,
                self._call,
                address,
                method,
                request,
                response_type,
                timeout=timeout,
                retries=retries,
            )
        return await self._call(address, method, request, response_type, timeout=timeout, retries=retries)

    async def _call(
        self,
        address: str,
        method: str,
        request: Any,
        response_type: type[Resp],
        *,
        timeout: float,
        retries: int,
    ) -> Resp:
        call_id = next(self._ids) & (2**63 - 1)
        pending = self._pending[call_id] = _PendingDatagram(address)
        attempt_timeout = timeout / (retries + 1)
        try:
            for attempt in range(retries + 1):
                remaining = timeout - attempt * attempt_timeout
                datagram = encode_datagram(
                    Request(call_id, method, remaining), request, max_size=self.max_size
                )
                await self.host.transport.send_datagram(address, datagram)
                with trio.move_on_after(attempt_timeout):
                    await pending.done.wait()
                    break
                self.stats["retries" if attempt < retries else "timeouts"] += 1
        finally:
            self._pending.pop(call_id, None)
        if pending.envelope is None:
            raise CallTimeout(f"{method} on {address}: no reply in {retries + 1} tries over {timeout:.3g}s")
        if isinstance(pending.envelope, ErrorReply):
            raise RemoteError(pending.envelope.code, pending.envelope.message, peer=address)
        assert pending.payload is not None
        try:
            return decode_payload(response_type, pending.payload)
        except msgspec.MsgspecError as exc:
            raise ProtocolError(f"{method} on {address} sent a malformed reply: {exc}") from None
