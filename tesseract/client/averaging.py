"""Many trainers, one model: trainers average their own parameters (everything that is not a remote
expert: embeddings, gates, heads) with each other through the swarm, in small groups.

How a round goes (hivemind's decentralized averager and Moshpit SGD are the anchors):

1. The trainer takes a snapshot of its parameters (one flat float32 vector) and goes on training.
2. It picks the next *window* boundary (windows are ``window`` seconds of the shared wall clock, at
   least ``lead`` seconds ahead) and registers under the DHT key ``averaging:NAME:SHAPES:WINDOW``,
   one sub-key per member (its endpoint). ``SHAPES`` is a digest of the parameter shapes, so only
   trainers of the same model meet.
3. At the boundary it reads every member, and all of them cut the same list into the same groups
   (``form_groups``: ordered by a hash of window and member, so groups change every round and the
   whole swarm mixes, as in Moshpit SGD).
4. It pulls the snapshot of each member of its group (``avg.pull``, over stream RPC, with a
   deadline), keeps the ones that are float32 vectors of its own length with finite values, and
   averages them with its own. A member that sends garbage or nothing is left out of the round;
   the rest complete it.
5. The change (mean minus own snapshot) waits until the trainer's next step boundary
   (``apply_pending``, on the training thread), so the steps taken meanwhile are kept and no tensor
   is changed under the optimizer's feet.

Without training, a group's members end a round with identical parameters, and rounds with
changing groups bring the whole swarm to one set of parameters.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import msgspec
import torch
import trio
from torch import nn

from tesseract.client.session import Client
from tesseract.concurrency import background_nursery
from tesseract.net import NetError, RemoteError, Router, RPCServer
from tesseract.net.address import is_address
from tesseract.net.tensors import WireTensor, deserialize_tensor, serialize_tensor
from tesseract.runtime.schema import all_finite

logger = logging.getLogger(__name__)


class AveragingErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"  # no snapshot for that key and window (never had one, or long gone)


class PullRequest(msgspec.Struct, tag="avg.pull", array_like=True):
    key: Annotated[str, msgspec.Meta(max_length=512)]
    window: int


class PullResponse(msgspec.Struct, tag="avg.params", array_like=True):
    parameters: WireTensor


@dataclass(frozen=True)
class AveragingConfig:
    #: Trainers of the same ``name`` and parameter shapes average together.
    name: str = "model"
    #: Members per group (the last group of a round may hold up to twice as many, never one alone).
    group_size: int = 8
    #: Rounds start at multiples of this many seconds of wall time ...
    window: float = 5.0
    #: ... at least this long after the trainer asked for one (time to register in the DHT). Less
    #: than ``window``, so a trainer that asks again right after a round makes the very next
    #: boundary: trainers that average often all meet at every boundary, none out of phase.
    lead: float = 1.0
    #: Each pull must answer within this long; the round ends without the ones that did not.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {self.group_size}")
        for name in ("window", "lead", "timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lead >= self.window:
            raise ValueError(f"lead ({self.lead}s) must be shorter than window ({self.window}s)")


def form_groups(members: Sequence[str], window: int, group_size: int) -> list[list[str]]:
    """The round's groups: members ordered by a hash of (window, member), cut every ``group_size``;
    a last group too small to average (one member) joins the one before. Every member computes the
    same groups from the same list."""

    def order(member: str) -> bytes:
        return hashlib.blake2b(f"{window}:{member}".encode(), digest_size=8).digest()

    ordered = sorted(dict.fromkeys(members), key=order)
    groups = [ordered[start : start + group_size] for start in range(0, len(ordered), group_size)]
    if len(groups) > 1 and len(groups[-1]) < 2:
        groups[-2].extend(groups.pop())
    return groups


def shapes_digest(parameters: Sequence[torch.Tensor]) -> str:
    text = ";".join(f"{p.dtype}{tuple(p.shape)}" for p in parameters)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class ParameterAverager:
    """``async with ParameterAverager.start(client, model.parameters()) as averager``: serves this
    trainer's snapshots and runs its rounds. From the training thread: ``averager.request_round()``
    now and then, ``averager.apply_pending()`` at step boundaries."""

    def __init__(self, client: Client, parameters: Sequence[nn.Parameter], config: AveragingConfig) -> None:
        self.client = client
        self.config = config
        self.parameters = [p for p in parameters if p.requires_grad]
        if not self.parameters:
            raise ValueError("nothing to average: the model has no trainable parameters of its own")
        self.size = sum(p.numel() for p in self.parameters)
        self.key = f"averaging:{config.name}:{shapes_digest(self.parameters)}"
        #: window -> the snapshot this trainer offers for it.
        self._offers: dict[int, torch.Tensor] = {}
        # Changes of finished rounds: the loop appends, the training thread pops (both atomic on a
        # deque, so neither waits and none is lost).
        self._pending: deque[torch.Tensor] = deque()
        self._running = False
        self._nursery: trio.Nursery | None = None
        #: rounds done, members averaged with, members left out (silent or sending garbage).
        self.stats: Counter[str] = Counter()

    @classmethod
    @asynccontextmanager
    async def start(
        cls, client: Client, parameters: Sequence[nn.Parameter], config: AveragingConfig | None = None
    ) -> AsyncIterator[ParameterAverager]:
        """For trio code: an averager serving until the block ends."""
        averager = cls(client, list(parameters), config or AveragingConfig())
        async with background_nursery() as nursery:
            await nursery.start(averager.serve)
            yield averager

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer pulls and run rounds until cancelled. Plain torch code starts it on the client's
        loop: ``client.run(client.start_service, averager.serve)``."""
        router = Router(error_codes=AveragingErrorCode)
        router.add("avg.pull", PullRequest, self._on_pull)
        server = RPCServer(self.client.host, router)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # ----- from the training thread ---------------------------------------------------------------

    def request_round(self) -> bool:
        """Snapshot the parameters and start a round in the background, unless one is running."""
        return self.client.run(self.start_round)

    def apply_pending(self) -> bool:
        """Add what finished rounds changed to the parameters; whether there was anything."""
        if not self._pending:
            return False
        delta = self._pending.popleft()
        while self._pending:
            delta = delta + self._pending.popleft()
        with torch.no_grad():
            offset = 0
            for parameter in self.parameters:
                count = parameter.numel()
                parameter.add_(delta[offset : offset + count].view_as(parameter).to(parameter.dtype))
                offset += count
        return True

    def settle(self, duration: float) -> int:
        """Average round after round for ``duration`` seconds without training (at the end of a run:
        trainers that finish at different times still end on one set of parameters); rounds done."""
        return self.client.run(self.settle_async, duration)

    # ----- on the client's loop -------------------------------------------------------------------

    async def settle_async(self, duration: float) -> int:
        """``settle`` on the loop. The training thread waits meanwhile, so changes apply at once."""
        end = trio.current_time() + duration
        rounds = 0
        while trio.current_time() < end:
            while self._running:  # a round the trainer started: let it end first
                await trio.sleep(0.05)
            self.apply_pending()
            self._running = True
            await self._round(self.snapshot())
            self.apply_pending()
            rounds += 1
        return rounds

    async def start_round(self) -> bool:
        if self._running or self._nursery is None:
            return False
        snapshot = self.snapshot()
        self._running = True
        self._nursery.start_soon(self._round, snapshot)
        return True

    @property
    def running(self) -> bool:
        """Whether a round is under way (its change is not pending yet)."""
        return self._running

    def snapshot(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1).float() for p in self.parameters]).clone()

    async def _round(self, snapshot: torch.Tensor) -> None:
        try:
            await self._average(snapshot)
        except Exception:  # a round that fails changes nothing; training goes on
            logger.exception("averaging round failed")
            self.stats["failed_rounds"] += 1
        finally:
            self._running = False

    async def _average(self, snapshot: torch.Tensor) -> None:
        config, host = self.config, self.client.host
        dht = self.client.require_dht()
        boundary = math.ceil((host.wall_time() + config.lead) / config.window) * config.window
        window = round(boundary / config.window)
        self._offers[window] = snapshot
        key = f"{self.key}:{window}"
        me = host.address
        registered = await dht.store(key, me, boundary + config.window + config.timeout, subkey=me)
        if not registered:
            self.stats["unregistered_rounds"] += 1
        await trio.sleep(max(0.0, boundary - host.wall_time()))
        found = await dht.get(key, latest=True)
        members = [me]
        if found is not None and found.subkeys is not None:
            members += [m for m, item in found.subkeys.items() if isinstance(m, str) and item.value == m]
        group = next(g for g in form_groups(members, window, config.group_size) if me in g)
        others = [member for member in group if member != me and is_address(member)]
        pulled: list[torch.Tensor] = []

        async def pull(member: str) -> None:
            tensor = await self._pull(member, window)
            if tensor is not None:
                pulled.append(tensor)

        with trio.move_on_after(config.timeout):
            async with trio.open_nursery() as nursery:
                for member in others:
                    nursery.start_soon(pull, member)
        # Keep offering for a while: slower members of the group may still be pulling.
        self._forget_offers_before(window - 2)
        self.stats["rounds"] += 1
        self.stats["averaged_with"] += len(pulled)
        self.stats["left_out"] += len(others) - len(pulled)
        if not pulled:
            return
        mean = torch.stack([snapshot, *pulled]).mean(dim=0)
        self._pending.append(mean - snapshot)

    async def _pull(self, member: str, window: int) -> torch.Tensor | None:
        """A member's snapshot, or None if it has none that fits (counted by reason)."""
        try:
            reply = await self.client.rpc.call(
                member, "avg.pull", PullRequest(self.key, window), PullResponse, timeout=self.config.timeout
            )
            tensor = deserialize_tensor(reply.parameters)
        except (NetError, RemoteError, ValueError, msgspec.MsgspecError) as exc:
            self.stats["silent"] += 1
            logger.debug("averaging: %s left out: %s", member, exc)
            return None
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != (self.size,) or not all_finite(tensor):
            self.stats["bad_tensors"] += 1
            logger.warning(
                "averaging: %s sent %s%s (expected float32[%d], finite): left out",
                member,
                tensor.dtype,
                list(tensor.shape),
                self.size,
            )
            return None
        return tensor.clone()

    def _forget_offers_before(self, window: int) -> None:
        for old in [w for w in self._offers if w < window]:
            del self._offers[old]

    async def _on_pull(self, request: PullRequest, peer: str) -> PullResponse:
        offer = self._offers.get(request.window) if request.key == self.key else None
        if offer is None:
            missing = f"no snapshot for {request.key} window {request.window}"
            raise RemoteError(AveragingErrorCode.NOT_FOUND, missing)
        return PullResponse(serialize_tensor(self.offer(offer)))

    def offer(self, snapshot: torch.Tensor) -> torch.Tensor:
        """What this trainer sends to the members of its group (its snapshot)."""
        return snapshot


__all__ = ["AveragingConfig", "ParameterAverager", "form_groups"]
