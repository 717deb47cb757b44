"""The DHT's server side: ``dht.ping``, ``dht.store`` and ``dht.find``, and who gets what from them.

Admission, for every request: the sender's clock must agree with ours (``clock_skew`` otherwise), its
id must be empty (a client-mode node, answered but never routed to) or a full id (observed into the
routing table). A store is judged per item (``stored``, or ``expired``, ``too_far``, ``too_large``,
``outdated``, ``full``, ``flood`` past the sender's token bucket), each reason counted. A find reply
spends at most ``REPLY_BUDGET`` bytes, records served in pages (``records.record_page``), and a reply
to an address that has not shown a valid token keeps within three times its request (``tokens``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import msgspec
import trio

from tesseract.dht import protocol as wire
from tesseract.dht.config import DHTConfig
from tesseract.dht.errors import DHTErrorCode
from tesseract.dht.ids import NodeID, id_from_bytes, id_to_bytes
from tesseract.dht.policy import StoreRateLimiter
from tesseract.dht.records import record_page
from tesseract.dht.routing import RoutingTable
from tesseract.dht.storage import RecordStore
from tesseract.dht.tokens import AddressTokens, within_amplification_limit
from tesseract.net import ErrorCode, RemoteError, Router
from tesseract.net.host import Host

_encode = msgspec.msgpack.encode
#: What one find reply may encode to, under the 65,000-byte datagram with room for its envelope.
REPLY_BUDGET = 60_000
#: A find reply's own fields (tag, responder, time, token, flags, list headers), counted generously.
_REPLY_FIXED = 128
#: A result's own fields (array header, nodes list header, record array, flag).
_RESULT_FIXED = 16


class RequestHandler:
    """Answers one node's DHT requests from its routing table and record store."""

    def __init__(
        self,
        *,
        host: Host,
        node_id: NodeID,
        config: DHTConfig,
        routing: RoutingTable,
        storage: RecordStore,
        observe: Callable[[NodeID, str], None],
        refreshed: dict[NodeID, float],
        stats: Counter[str],
    ) -> None:
        self.host = host
        self.config = config
        self.routing = routing
        self.storage = storage
        self._raw_id = id_to_bytes(node_id)
        self._observe = observe
        #: key -> when someone last (re)stored it here; the node's republishing reads it.
        self.refreshed = refreshed
        self.stats = stats
        self.tokens = AddressTokens(host.random.getrandbits(256).to_bytes(32, "big"))
        self.store_limiter = StoreRateLimiter(config.store_rate, config.store_burst, config.max_store_peers)

    def register(self, router: Router) -> None:
        router.add("dht.ping", wire.PingRequest, self.on_ping)
        router.add("dht.store", wire.StoreRequest, self.on_store)
        router.add("dht.find", wire.FindRequest, self.on_find)

    # ----- admission ---------------------------------------------------------------------------

    def accept_sender(self, sender: bytes, sent_at: float, address: str) -> NodeID | None:
        """The sender's id if it is a routable node, None for a client; RemoteError if refused."""
        skew = sent_at - self.host.wall_time()
        if not math.isfinite(skew) or abs(skew) > self.config.max_clock_skew:
            self.stats["clock_skew"] += 1
            raise RemoteError(
                DHTErrorCode.CLOCK_SKEW,
                f"your clock is {skew:+.1f}s off ours (limit {self.config.max_clock_skew}s): ignored",
            )
        if not sender:
            return None  # a client-mode node: answer it, but never route to it
        if len(sender) != len(self._raw_id):
            raise RemoteError(
                ErrorCode.BAD_REQUEST, f"a sender id has {len(self._raw_id)} bytes, not {len(sender)}"
            )
        node_id = id_from_bytes(sender)
        self._observe(node_id, address)
        return node_id

    def _token_for(self, address: str) -> bytes:
        return self.tokens.issue(address, trio.current_time())

    # ----- handlers ----------------------------------------------------------------------------

    async def on_ping(self, request: wire.PingRequest, peer: str) -> wire.PingResponse:
        self.accept_sender(request.sender, request.time, peer)
        return wire.PingResponse(self._raw_id, self.host.wall_time(), self._token_for(peer))

    async def on_store(self, request: wire.StoreRequest, peer: str) -> wire.StoreResponse:
        self.accept_sender(request.sender, request.time, peer)
        now = self.host.wall_time()
        clock = trio.current_time()
        allowed = self.store_limiter.take(peer, len(request.items), clock)
        results = []
        for index, item in enumerate(request.items):
            if index >= allowed:
                reason = "flood"
            elif not math.isfinite(item.expiration) or item.expiration > now + self.config.max_ttl:
                reason = "too_far"
            elif len(item.value) > self.config.max_value_size:
                reason = "too_large"
            else:
                target = id_from_bytes(item.key)
                reason = self.storage.store(target, item.value, item.expiration, now, item.subkey).reason
                # Stored, or already held in this very version: another replica republished it.
                if reason == "stored" or (
                    reason == "outdated"
                    and self.storage.expiration_of(target, item.subkey, now) == item.expiration
                ):
                    self.refreshed[target] = now
            self.stats[f"store_{reason}"] += 1
            results.append(reason)
        flooded = len(request.items) - allowed
        retry_after = self.store_limiter.retry_after(peer, flooded, clock) if flooded > 0 else 0.0
        return wire.StoreResponse(
            self._raw_id, self.host.wall_time(), results, self._token_for(peer), retry_after
        )

    async def on_find(self, request: wire.FindRequest, peer: str) -> wire.FindResponse:
        sender = self.accept_sender(request.sender, request.time, peer)
        if request.after is not None and len(request.keys) != 1:
            raise RemoteError(ErrorCode.BAD_REQUEST, "a find for the next page names one key")
        clock = trio.current_time()
        now = self.host.wall_time()
        node_lists = [
            []
            if request.after is not None  # a later page: the asker has the nodes already
            else [
                wire.NodeRef(id_to_bytes(p.node_id), p.address)
                for p in self.routing.nearest(id_from_bytes(key), self.config.k, exclude=sender)
            ]
            for key in request.keys
        ]
        spent = _REPLY_FIXED + sum(len(_encode(nodes)) + _RESULT_FIXED for nodes in node_lists)
        budget = max(0, REPLY_BUDGET - spent) // len(request.keys)
        results = []
        for raw_key, nodes in zip(request.keys, node_lists, strict=True):
            record = self.storage.get(id_from_bytes(raw_key), now) if request.want_values else None
            page, more = record_page(record, budget, request.after) if record is not None else (None, False)
            results.append(wire.FindResult(nodes, page, more))
        response = wire.FindResponse(self._raw_id, self.host.wall_time(), results, self._token_for(peer))
        self.stats["finds_served"] += 1
        if not self.tokens.valid(peer, request.token, clock) and not within_amplification_limit(
            len(_encode(request)), len(_encode(response))
        ):
            self.stats["finds_limited"] += 1
            return wire.FindResponse(response.responder, response.time, [], response.token, limited=True)
        return response


__all__ = ["REPLY_BUDGET", "RequestHandler"]
