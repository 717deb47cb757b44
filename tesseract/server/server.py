"""The expert server: serves ``info``, ``forward`` and ``backward`` for its experts and announces them.

``async with ExpertServer.start(host, backends, dht=node) as server`` serves until the block ends,
then shuts down gracefully: it stops announcing, refuses new requests (``unavailable``), lets the
requests in flight finish, and saves every expert's checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tesseract.concurrency import background_nursery
from tesseract.dht.node import DHTNode
from tesseract.net import RemoteError, Router, RPCServer
from tesseract.net.framing import DEFAULT_MAX_FRAME_SIZE
from tesseract.net.host import Host
from tesseract.net.messages import ErrorCode
from tesseract.net.tensors import deserialize_tensor, serialize_tensor
from tesseract.runtime.backend import ExpertBackend
from tesseract.runtime.errors import BatchFailed, InvalidBatch
from tesseract.runtime.pool import BACKWARD, FORWARD
from tesseract.runtime.runtime import ExpertStats, Runtime
from tesseract.runtime.schema import check_batch
from tesseract.server import protocol as wire
from tesseract.server.announce import declare_experts
from tesseract.server.protocol import ServerErrorCode

logger = logging.getLogger(__name__)


class ExpertServer:
    def __init__(
        self,
        host: Host,
        backends: Sequence[ExpertBackend],
        *,
        dht: DHTNode | None = None,
        update_period: float = 30.0,
        checkpoint_dir: Path | None = None,
        checkpoint_period: float = 60.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        fault_rate: float = 0.0,
        faulty_kinds: Sequence[str] = (FORWARD, BACKWARD),
    ) -> None:
        """``checkpoint_dir``: experts are restored from it at start, and saved to it every
        ``checkpoint_period`` seconds (those that trained since) and at shutdown, so a crash loses at
        most one period of training. ``fault_rate``: the share of requests of ``faulty_kinds``
        answered with an injected ``unavailable`` error (drawn from the host's seeded random), to test
        trainers against failures."""
        if not checkpoint_period > 0:
            raise ValueError(f"checkpoint_period must be positive, got {checkpoint_period}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        self.fault_rate = fault_rate
        self.faulty_kinds = frozenset(faulty_kinds)
        self.host = host
        self.backends = {backend.uid: backend for backend in backends}
        self.dht = dht
        self.update_period = update_period
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_period = checkpoint_period
        self.checkpoints_saved = 0
        self.runtime = Runtime(host, backends)
        router = Router(
            error_codes=ServerErrorCode,
            # The runtime's errors, on the wire: a batch that does not fit is the caller's mistake.
            error_types={InvalidBatch: ErrorCode.BAD_REQUEST, BatchFailed: ErrorCode.INTERNAL},
        )
        router.add("expert.info", wire.InfoRequest, self._on_info)
        router.add("expert.forward", wire.ForwardRequest, self._on_forward)
        router.add("expert.backward", wire.BackwardRequest, self._on_backward)
        self.rpc = RPCServer(host, router, max_frame_size=max_frame_size)
        self.accepting = True
        self._inflight = 0
        self._idle = trio.Event()
        self._idle.set()
        self.announcements = 0

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def errors(self):
        return self.rpc.stats

    def stats(self) -> dict[str, dict[str, ExpertStats]]:
        return {
            uid: {kind: self.runtime.stats[(uid, kind)] for kind in (FORWARD, BACKWARD)}
            for uid in self.backends
        }

    # ----- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def start(
        cls, host: Host, backends: Sequence[ExpertBackend], **options
    ) -> AsyncIterator[ExpertServer]:
        server = cls(host, backends, **options)
        if server.checkpoint_dir is not None:
            restored = [b.uid for b in backends if b.load(server.checkpoint_dir)]
            if restored:
                logger.info("restored %d experts from %s", len(restored), server.checkpoint_dir)
        async with background_nursery() as nursery:
            await nursery.start(server.runtime.run)
            await nursery.start(server.rpc.serve)
            if server.dht is not None:
                await nursery.start(server._announce)
            if server.checkpoint_dir is not None:
                nursery.start_soon(server._checkpoint_periodically)
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await server.shutdown()

    async def shutdown(self) -> None:
        """Stop announcing and accepting, finish what is in flight, save checkpoints."""
        self.accepting = False
        await self._idle.wait()
        await self.save_checkpoints()

    async def save_checkpoints(self) -> int:
        """Save every expert that trained since its last checkpoint; how many were saved."""
        if self.checkpoint_dir is None:
            return 0
        saved = 0
        for backend in self.backends.values():
            if backend.saved_steps != backend.steps or backend.step_pending:
                await self.host.compute(backend.save, self.checkpoint_dir)
                saved += 1
        self.checkpoints_saved += saved
        return saved

    async def _checkpoint_periodically(self) -> None:
        while True:
            await trio.sleep(self.checkpoint_period)
            try:
                await self.save_checkpoints()
            except OSError as exc:  # a full disk must not stop the serving; the next period retries
                logger.error("periodic checkpoint failed: %s", exc)

    async def _announce(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Declare our experts every ``update_period``, each declaration valid for twice that."""
        assert self.dht is not None
        uids = list(self.backends)
        first = True
        while self.accepting:
            expiration = self.host.wall_time() + 2 * self.update_period
            stored = await declare_experts(self.dht, uids, self.address, expiration)
            self.announcements += 1
            if not all(stored.values()):
                logger.warning("announced %d of %d experts", sum(stored.values()), len(uids))
            if first:
                task_status.started()
                first = False
            await trio.sleep(self.update_period)

    # ----- handlers ----------------------------------------------------------------------------

    def _backend(self, uid: str) -> ExpertBackend:
        if not self.accepting:
            raise RemoteError(ServerErrorCode.UNAVAILABLE, "this server is shutting down")
        backend = self.backends.get(uid)
        if backend is None:
            raise RemoteError(ServerErrorCode.NOT_FOUND, f"no expert {uid!r} on this server")
        return backend

    async def _on_info(self, request: wire.InfoRequest, peer: str) -> wire.InfoResponse:
        backend = self._backend(request.uid)
        return wire.InfoResponse(backend.uid, backend.schema, backend.max_batch_size)

    def _maybe_inject_fault(self, kind: str) -> None:
        if self.fault_rate and kind in self.faulty_kinds and self.host.random.random() < self.fault_rate:
            raise RemoteError(ServerErrorCode.UNAVAILABLE, "injected fault (fault_rate)")

    async def _on_forward(self, request: wire.ForwardRequest, peer: str) -> wire.ForwardResponse:
        backend = self._backend(request.uid)
        self._maybe_inject_fault(FORWARD)
        inputs = [deserialize_tensor(t) for t in request.inputs]
        rows = check_batch(
            inputs, backend.schema.inputs, what="inputs", max_batch_size=backend.max_batch_size
        )
        outputs = await self._submit(backend.uid, FORWARD, inputs, rows)
        return wire.ForwardResponse([serialize_tensor(t) for t in outputs])

    async def _on_backward(self, request: wire.BackwardRequest, peer: str) -> wire.BackwardResponse:
        backend = self._backend(request.uid)
        self._maybe_inject_fault(BACKWARD)
        inputs = [deserialize_tensor(t) for t in request.inputs]
        grads = [deserialize_tensor(t) for t in request.grad_outputs]
        rows = check_batch(
            inputs, backend.schema.inputs, what="inputs", max_batch_size=backend.max_batch_size
        )
        grad_rows = check_batch(
            grads, backend.schema.outputs, what="grad_outputs", max_batch_size=backend.max_batch_size
        )
        if grad_rows != rows:
            raise InvalidBatch(f"grad_outputs have {grad_rows} rows, inputs {rows}")
        grad_inputs = await self._submit(backend.uid, BACKWARD, inputs + grads, rows)
        return wire.BackwardResponse([serialize_tensor(t) for t in grad_inputs])

    async def _submit(self, uid: str, kind: str, tensors: list, rows: int) -> list:
        self._inflight += 1
        self._idle = trio.Event() if self._inflight == 1 else self._idle
        try:
            return await self.runtime.submit(uid, kind, tensors, rows)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
