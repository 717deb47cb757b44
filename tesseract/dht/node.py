"""A Kademlia DHT node over a host: datagram RPCs, lookups, replication, and maintenance.

Open one with ``async with DHTNode.start(host, initial_peers=[...]) as node``. It serves ``ping``,
``store`` (many items per call) and ``find`` (closest nodes and, optionally, the value, for many keys
per call) on the host's datagram endpoint, and keeps its routing table and records fresh in the
background: stale buckets are refreshed, held records are republished to the nodes now closest to
them, and found values are cached at the closest node that lacked them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import trio

from tesseract.concurrency import background_nursery
from tesseract.dht import experts
from tesseract.dht import protocol as wire
from tesseract.dht.ids import ID_BITS, NodeID, id_from_bytes, id_to_bytes, key_id, random_id
from tesseract.dht.lookup import Lookup, merge_records
from tesseract.dht.routing import Peer, RoutingTable
from tesseract.dht.storage import Entry, Record, RecordStore
from tesseract.net import DatagramRPC, ErrorCode, NetError, RemoteError, Router
from tesseract.net.address import parse_address
from tesseract.net.host import Host

logger = logging.getLogger(__name__)

Key = str | bytes


class DHTError(Exception):
    """A DHT operation could not be carried out."""


class BootstrapError(DHTError):
    """None of the initial peers answered."""


class Found(NamedTuple):
    """A record read from the DHT: a plain ``value``, or for a dictionary record (``subkeys`` is not
    None) its live entries, each a ``Found`` of its own, with ``value`` None."""

    value: Any
    expiration: float
    subkeys: dict[Any, Found] | None = None

    @property
    def is_dictionary(self) -> bool:
        return self.subkeys is not None


@dataclass(frozen=True)
class DHTConfig:
    k: int = 20
    alpha: int = 3
    #: Each record is stored on this many of the nodes closest to its key.
    num_replicas: int = 8
    #: Budget of one request (its one retry included).
    request_timeout: float = 1.0
    retries: int = 1
    #: Budget of a whole store or get.
    operation_timeout: float = 10.0
    max_clock_skew: float = 5.0
    #: Records may not expire further than this in the future.
    max_ttl: float = 7 * 24 * 3600.0
    refresh_interval: float = 600.0
    republish_interval: float = 300.0
    #: Store items accepted per second from one peer (token bucket), and the burst allowed.
    store_rate: float = 200.0
    store_burst: float = 2_000.0
    blacklist_base: float = 1.0
    blacklist_max: float = 60.0
    max_records: int = 100_000
    max_record_bytes: int = 256 * 1024 * 1024
    max_value_size: int = 4_096
    cache_found_values: bool = True
    #: A node that only asks: it serves no requests, holds no records, and tells every peer so (an
    #: empty sender id), so it never enters a routing table. For trainers, which come and go.
    client_mode: bool = False


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode
#: What a find reply may spend on records, leaving room for the node lists and framing.
REPLY_RECORD_BUDGET = 40_000


class DHTNode:
    def __init__(self, host: Host, *, node_id: NodeID | None = None, config: DHTConfig | None = None) -> None:
        self.host = host
        self.config = config or DHTConfig()
        self.node_id = node_id if node_id is not None else random_id(host.random)
        self._raw_id = id_to_bytes(self.node_id)
        self._sender_id = b"" if self.config.client_mode else self._raw_id  # what our requests say
        self.routing = RoutingTable(self.node_id, k=self.config.k)
        self.storage = RecordStore(
            max_entries=self.config.max_records,
            max_bytes=self.config.max_record_bytes,
            max_value_size=self.config.max_value_size + 256,
        )
        router = Router()
        if not self.config.client_mode:  # a client answers nothing: unknown_method to all
            router.add("dht.ping", wire.PingRequest, self._on_ping)
            router.add("dht.store", wire.StoreRequest, self._on_store)
            router.add("dht.find", wire.FindRequest, self._on_find)
        self.rpc = DatagramRPC(host, router)
        self.stats: Counter[str] = Counter()
        self._blacklist: dict[str, tuple[float, float]] = {}  # address -> (until, last backoff)
        self._store_tokens: dict[str, tuple[float, float]] = {}  # address -> (tokens, at time)
        self._last_refreshed: dict[NodeID, float] = {}  # key -> when someone last (re)stored it here
        self._published: dict[tuple[NodeID, bytes | None], wire.StoreItem] = {}  # our own records
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> str:
        return self.host.address

    # ----- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        host: Host,
        initial_peers: Sequence[str] = (),
        *,
        node_id: NodeID | None = None,
        config: DHTConfig | None = None,
        leave_gracefully: bool = True,
    ) -> AsyncIterator[DHTNode]:
        """Serve, join through ``initial_peers`` (none: start a new DHT), keep fresh; leave on exit."""
        node = cls(host, node_id=node_id, config=config)
        async with background_nursery() as nursery:
            node._nursery = nursery
            await nursery.start(node.rpc.serve)
            if initial_peers:
                await node.bootstrap(initial_peers)
            nursery.start_soon(node._maintain)
            yield node
            if leave_gracefully:
                with trio.move_on_after(node.config.operation_timeout):
                    await node.leave()

    async def bootstrap(self, initial_peers: Sequence[str]) -> None:
        """Ping the initial peers; fill the routing table with a lookup of our own id."""
        for address in initial_peers:
            parse_address(address)  # a malformed address is the caller's error, raised as ValueError
        answered: list[str] = []

        async def ping(address: str) -> None:
            if await self.ping(address):
                answered.append(address)

        async with trio.open_nursery() as nursery:
            for address in initial_peers:
                nursery.start_soon(ping, address)
        if not answered:
            raise BootstrapError(
                f"none of the {len(initial_peers)} initial peers answered within "
                f"{self.config.request_timeout}s: {', '.join(initial_peers)}"
            )
        await self.find_nodes(self.node_id)

    async def leave(self) -> None:
        """Hand the records we hold to the nodes closest to them, so leaving loses nothing."""
        items = self._held_items(self.host.wall_time())
        if items and len(self.routing):
            await self._replicate(items, exclude_self=True)
        self.stats["left"] += 1

    # ----- public API --------------------------------------------------------------------------

    async def store(self, key: Key, value: Any, expiration: float, *, subkey: Any = None) -> bool:
        """Store ``value`` under ``key`` (and ``subkey``: a dictionary entry) until ``expiration``
        (Unix time). True if at least one replica accepted it."""
        return (await self.store_many([(key, value, expiration, subkey)]))[0]

    async def store_many(
        self, items: Iterable[tuple[Key, Any, float] | tuple[Key, Any, float, Any]]
    ) -> list[bool]:
        """Store many records at once: one lookup round per key, shared requests per peer."""
        store_items = [self._make_item(*item) for item in items]
        for item in store_items:
            self._published[(id_from_bytes(item.key), item.subkey)] = item
        with trio.move_on_after(self.config.operation_timeout):
            return await self._replicate(store_items, exclude_self=False)
        return [False] * len(store_items)

    async def get(self, key: Key, *, latest: bool = False, use_local: bool = True) -> Found | None:
        """The value under ``key``, or None. ``latest`` asks every replica and merges the newest;
        ``use_local=False`` ignores what this node holds itself and asks the network."""
        return (await self.get_many([key], latest=latest, use_local=use_local))[key]

    async def get_many(
        self, keys: Sequence[Key], *, latest: bool = False, use_local: bool = True
    ) -> dict[Key, Found | None]:
        now = self.host.wall_time()
        records: dict[NodeID, Record | None] = {}
        targets: list[NodeID] = []
        for key in keys:
            target = key_id(key)
            local = self.storage.get(target, now) if use_local else None
            records[target] = local
            if local is None or latest:
                targets.append(target)
        if targets:
            lookups = {
                target: Lookup(
                    target,
                    k=self.config.k,
                    alpha=self.config.alpha,
                    want_value=True,
                    is_fresh=(lambda record: False) if latest else (lambda record: True),
                    own_id=self.node_id,
                )
                for target in dict.fromkeys(targets)
            }
            with trio.move_on_after(self.config.operation_timeout):
                await self._run_lookups(lookups)
            for target, lookup in lookups.items():
                records[target] = merge_records(records[target], lookup.record)
                if lookup.record is not None:
                    self.stats["get_rounds"] += lookup.found_at_round or 0
                    self.stats["gets_found"] += 1
                    self._cache_at_closest_lacking(target, lookup)
        return {key: self._to_found(records[key_id(key)], now) for key in keys}

    async def find_nodes(self, target: NodeID) -> list[Peer]:
        """The k nodes closest to ``target`` that answered, closest first."""
        lookup = Lookup(target, k=self.config.k, alpha=self.config.alpha, own_id=self.node_id)
        with trio.move_on_after(self.config.operation_timeout):
            await self._run_lookups({target: lookup})
        return lookup.closest()

    async def ping(self, address: str) -> bool:
        response = await self._call(
            address, "dht.ping", wire.PingRequest(self._sender_id, self.host.wall_time()), wire.PingResponse
        )
        return response is not None

    # ----- experts (see tesseract.dht.experts) -------------------------------------------------

    async def declare_experts(self, uids: Sequence[str], endpoint: str, expiration: float) -> dict[str, bool]:
        return await experts.declare_experts(self, uids, endpoint, expiration)

    async def get_experts(self, uids: Sequence[str]) -> list[experts.ExpertInfo | None]:
        return await experts.get_experts(self, uids)

    async def get_active_successors(
        self, prefixes: Sequence[str], grid_size: int | None = None
    ) -> dict[str, dict[int, experts.ExpertInfo]]:
        return await experts.get_active_successors(self, prefixes, grid_size)

    async def find_alive_prefixes(self, prefixes: Iterable[str]) -> list[str]:
        return await experts.find_alive_prefixes(self, prefixes)

    # ----- lookups -----------------------------------------------------------------------------

    async def _run_lookups(self, lookups: dict[NodeID, Lookup]) -> None:
        """Drive many lookups at once; requests to the same peer are merged (up to 8 keys each)."""
        now = trio.current_time()
        for target, lookup in lookups.items():
            lookup.add_candidates(self.routing.nearest(target, self.config.k))
            self.routing.lookup_performed(target, now)
        async with trio.open_nursery() as nursery:

            def launch() -> None:
                if all(lookup.done for lookup in lookups.values()):
                    # Every lookup has its answer: stop waiting for stragglers (a dead peer's timeout).
                    nursery.cancel_scope.cancel()
                    return
                batches: dict[Peer, list[Lookup]] = {}
                for lookup in lookups.values():
                    for peer in lookup.next_peers():
                        batches.setdefault(peer, []).append(lookup)
                for peer, group in batches.items():
                    for start in range(0, len(group), wire.MAX_KEYS_PER_FIND):
                        nursery.start_soon(
                            self._query, peer, group[start : start + wire.MAX_KEYS_PER_FIND], launch
                        )

            launch()

    async def _query(self, peer: Peer, group: list[Lookup], launch) -> None:
        want_values = any(lookup.want_value for lookup in group)
        request = wire.FindRequest(
            self._sender_id,
            self.host.wall_time(),
            [id_to_bytes(lookup.target) for lookup in group],
            want_values,
        )
        response = await self._call(
            peer.address, "dht.find", request, wire.FindResponse, expected_id=peer.node_id
        )
        if response is None or len(response.results) != len(group):
            for lookup in group:
                lookup.on_failure(peer.node_id)
        else:
            retry_alone = []
            for lookup, result in zip(group, response.results, strict=True):
                if result.truncated and len(group) > 1:
                    retry_alone.append(lookup)
                    continue
                lookup.on_response(peer.node_id, self._peers_from(result.nodes), _record_from(result.record))
            for lookup in retry_alone:
                request = wire.FindRequest(
                    self._sender_id, self.host.wall_time(), [id_to_bytes(lookup.target)], True
                )
                single = await self._call(peer.address, "dht.find", request, wire.FindResponse)
                if single is None or len(single.results) != 1:
                    lookup.on_failure(peer.node_id)
                else:
                    result = single.results[0]
                    lookup.on_response(
                        peer.node_id, self._peers_from(result.nodes), _record_from(result.record)
                    )
        launch()

    def _peers_from(self, refs: list[wire.NodeRef]) -> list[Peer]:
        peers = []
        for ref in refs:
            try:
                parse_address(ref.address)
            except ValueError:
                self.stats["bad_addresses"] += 1
                continue
            peers.append(Peer(id_from_bytes(ref.node_id), ref.address))
        return peers

    # ----- storing -----------------------------------------------------------------------------

    def _make_item(self, key: Key, value: Any, expiration: float, subkey: Any = None) -> wire.StoreItem:
        encoded = _encode(value)
        if len(encoded) > self.config.max_value_size:
            raise ValueError(
                f"value of {len(encoded)} bytes exceeds the DHT limit of {self.config.max_value_size}"
            )
        if not math.isfinite(expiration):
            raise ValueError(f"expiration must be a finite Unix time, got {expiration}")
        return wire.StoreItem(
            id_to_bytes(key_id(key)), None if subkey is None else _encode(subkey), encoded, expiration
        )

    async def _replicate(self, items: list[wire.StoreItem], *, exclude_self: bool) -> list[bool]:
        """Find each key's closest nodes and store the item there (and here, if we are among them)."""
        targets = {id_from_bytes(item.key) for item in items}
        # Only the num_replicas closest nodes are needed, so the lookup can stop once they answered.
        width = min(self.config.k, self.config.num_replicas)
        lookups = {t: Lookup(t, k=width, alpha=self.config.alpha, own_id=self.node_id) for t in targets}
        await self._run_lookups(lookups)
        accepted = [False] * len(items)
        per_peer: dict[Peer, list[int]] = {}
        now = self.host.wall_time()
        for index, item in enumerate(items):
            target = id_from_bytes(item.key)
            replicas = lookups[target].closest(self.config.num_replicas)
            farthest = replicas[-1].node_id ^ target if len(replicas) == self.config.num_replicas else None
            here = not exclude_self and not self.config.client_mode
            if here and (farthest is None or self.node_id ^ target < farthest):
                result = self.storage.store(target, item.value, item.expiration, now, item.subkey)
                accepted[index] = result.accepted or accepted[index]
                if result.accepted:
                    self._last_refreshed[target] = now
            for peer in replicas:
                per_peer.setdefault(peer, []).append(index)

        async def send(peer: Peer, indices: list[int]) -> None:
            for start in range(0, len(indices), wire.MAX_ITEMS_PER_STORE):
                chunk = indices[start : start + wire.MAX_ITEMS_PER_STORE]
                request = wire.StoreRequest(self._sender_id, self.host.wall_time(), [items[i] for i in chunk])
                response = await self._call(
                    peer.address, "dht.store", request, wire.StoreResponse, expected_id=peer.node_id
                )
                if response is None or len(response.results) != len(chunk):
                    continue
                for i, result in zip(chunk, response.results, strict=True):
                    # "outdated" means the replica already holds this or a newer version: that counts.
                    if result in ("stored", "outdated"):
                        accepted[i] = True

        async with trio.open_nursery() as nursery:
            for peer, indices in per_peer.items():
                nursery.start_soon(send, peer, indices)
        return accepted

    def _cache_at_closest_lacking(self, target: NodeID, lookup: Lookup) -> None:
        if (
            not self.config.cache_found_values
            or not lookup.lacking
            or lookup.record is None
            or self._nursery is None
        ):
            return
        peer = min(lookup.lacking, key=lambda p: p.node_id ^ target)
        items = _items_from_record(target, lookup.record)[: wire.MAX_ITEMS_PER_STORE]
        if items:
            request = wire.StoreRequest(self._sender_id, self.host.wall_time(), items)
            self._nursery.start_soon(self._call, peer.address, "dht.store", request, wire.StoreResponse)

    # ----- calls -------------------------------------------------------------------------------

    async def _call(
        self,
        address: str,
        method: str,
        request: Any,
        response_type: type,
        *,
        expected_id: NodeID | None = None,
    ):
        """One request with timeout, retry, blacklist and skew checks; None if it failed."""
        now = trio.current_time()
        blocked = self._blacklist.get(address)
        if blocked is not None and blocked[0] > now:
            self.stats["blacklisted_skips"] += 1
            return None
        try:
            response = await self.rpc.call(
                address,
                method,
                request,
                response_type,
                timeout=self.config.request_timeout,
                retries=self.config.retries,
            )
        except RemoteError as exc:
            self.stats[f"remote_{exc.code}"] += 1
            if exc.code == ErrorCode.CLOCK_SKEW.value:
                self._fail(address, expected_id)
            return None
        except (NetError, OSError) as exc:
            self.stats["call_failures"] += 1
            logger.debug("%s to %s failed: %s", method, address, exc)
            self._fail(address, expected_id)
            return None
        if abs(response.time - self.host.wall_time()) > self.config.max_clock_skew:
            self.stats["skewed_responses"] += 1
            self._fail(address, expected_id)
            return None
        self._blacklist.pop(address, None)
        responder = id_from_bytes(response.responder)
        if expected_id is not None and responder != expected_id:
            self.routing.contact_failed(expected_id)  # another node lives at that address now
        self._observe(responder, address)
        return response

    def _fail(self, address: str, node_id: NodeID | None) -> None:
        now = trio.current_time()
        previous = self._blacklist.get(address)
        backoff = (
            self.config.blacklist_base
            if previous is None
            else min(previous[1] * 2, self.config.blacklist_max)
        )
        self._blacklist[address] = (now + backoff, backoff)
        if node_id is not None:
            self.routing.contact_failed(node_id)

    def _observe(self, node_id: NodeID, address: str) -> None:
        ping = self.routing.observe(node_id, address, trio.current_time())
        if ping is not None and self._nursery is not None:
            self._nursery.start_soon(self._ping_oldest, ping.oldest)

    async def _ping_oldest(self, peer: Peer) -> None:
        response = await self._call(
            peer.address,
            "dht.ping",
            wire.PingRequest(self._sender_id, self.host.wall_time()),
            wire.PingResponse,
        )
        alive = response is not None and id_from_bytes(response.responder) == peer.node_id
        self.routing.ping_result(peer.node_id, alive, trio.current_time())

    # ----- handlers ----------------------------------------------------------------------------

    def _accept_sender(self, sender: bytes, sent_at: float, address: str) -> NodeID | None:
        skew = sent_at - self.host.wall_time()
        if not math.isfinite(skew) or abs(skew) > self.config.max_clock_skew:
            self.stats["clock_skew"] += 1
            raise RemoteError(
                ErrorCode.CLOCK_SKEW.value,
                f"your clock is {skew:+.1f}s off ours (limit {self.config.max_clock_skew}s): ignored",
            )
        if not sender:
            return None  # a client-mode node: answer it, but never route to it
        if len(sender) != len(self._raw_id):
            raise RemoteError(
                ErrorCode.BAD_REQUEST.value, f"a sender id has {len(self._raw_id)} bytes, not {len(sender)}"
            )
        node_id = id_from_bytes(sender)
        self._observe(node_id, address)
        return node_id

    async def _on_ping(self, request: wire.PingRequest, peer: str) -> wire.PingResponse:
        self._accept_sender(request.sender, request.time, peer)
        return wire.PingResponse(self._raw_id, self.host.wall_time())

    async def _on_store(self, request: wire.StoreRequest, peer: str) -> wire.StoreResponse:
        self._accept_sender(request.sender, request.time, peer)
        now = self.host.wall_time()
        allowed = self._take_store_tokens(peer, len(request.items))
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
                existing = self.storage.get(target, now)
                reason = self.storage.store(target, item.value, item.expiration, now, item.subkey).reason
                if reason == "stored" or (existing is not None and existing.expiration == item.expiration):
                    self._last_refreshed[target] = now
            self.stats[f"store_{reason}"] += 1
            results.append(reason)
        return wire.StoreResponse(self._raw_id, self.host.wall_time(), results)

    async def _on_find(self, request: wire.FindRequest, peer: str) -> wire.FindResponse:
        sender = self._accept_sender(request.sender, request.time, peer)
        now = self.host.wall_time()
        budget = REPLY_RECORD_BUDGET // len(request.keys)
        results = []
        for raw_key in request.keys:
            target = id_from_bytes(raw_key)
            nodes = [
                wire.NodeRef(id_to_bytes(p.node_id), p.address)
                for p in self.routing.nearest(target, self.config.k, exclude=sender)
            ]
            record = self.storage.get(target, now) if request.want_values else None
            message, truncated = _record_message(record, budget) if record is not None else (None, False)
            results.append(wire.FindResult(nodes, message, truncated))
        self.stats["finds_served"] += 1
        return wire.FindResponse(self._raw_id, self.host.wall_time(), results)

    def _take_store_tokens(self, peer: str, wanted: int) -> int:
        """How many of ``wanted`` store items this peer may place now (token bucket per address)."""
        now = trio.current_time()
        tokens, at = self._store_tokens.get(peer, (self.config.store_burst, now))
        tokens = min(self.config.store_burst, tokens + (now - at) * self.config.store_rate)
        granted = min(wanted, int(tokens))
        self._store_tokens[peer] = (tokens - granted, now)
        if len(self._store_tokens) > 10_000:  # forget the quietest peers rather than grow without bound
            for address in list(self._store_tokens)[:5_000]:
                del self._store_tokens[address]
        return granted

    # ----- maintenance -------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Refresh stale buckets, purge expired records, republish what we hold, on a jittered beat."""
        rng = self.host.random
        period = min(self.config.refresh_interval, self.config.republish_interval) / 4
        next_republish = trio.current_time() + self.config.republish_interval * (0.5 + rng.random())
        while True:
            await trio.sleep(period * (0.75 + 0.5 * rng.random()))
            now = self.host.wall_time()
            self.storage.purge(now)
            self._forget_stale_peers_and_keys()
            for target in self.routing.stale_buckets(trio.current_time(), self.config.refresh_interval, rng):
                await self.find_nodes(target)
            if trio.current_time() >= next_republish:
                next_republish = trio.current_time() + self.config.republish_interval
                await self.republish()

    def _forget_stale_peers_and_keys(self) -> None:
        """Bookkeeping about peers and keys must not grow without bound."""
        clock = trio.current_time()
        self._blacklist = {a: entry for a, entry in self._blacklist.items() if entry[0] > clock}
        held = set(self.storage.stored_keys())
        self._last_refreshed = {key: at for key, at in self._last_refreshed.items() if key in held}

    async def republish(self) -> None:
        """Re-store what we hold (and what we published) on the nodes now closest to it.

        A record some other replica re-stored here during the last interval is skipped: one replica
        per interval is enough (Kademlia's republish optimisation)."""
        now = self.host.wall_time()
        horizon = now - self.config.republish_interval
        items = [
            item
            for item in self._held_items(now)
            if self._last_refreshed.get(id_from_bytes(item.key), -math.inf) < horizon
        ]
        self._published = {key: item for key, item in self._published.items() if item.expiration > now}
        items.extend(self._published.values())
        if items:
            with trio.move_on_after(self.config.operation_timeout):
                await self._replicate(items, exclude_self=False)
            self.stats["republished"] += len(items)

    def _held_items(self, now: float) -> list[wire.StoreItem]:
        items = []
        for target in self.storage.stored_keys():
            record = self.storage.get(target, now)
            if record is not None:
                items.extend(_items_from_record(target, record))
        return items

    def _to_found(self, record: Record | None, now: float) -> Found | None:
        if record is None or record.expiration <= now:
            return None
        if record.value is not None:
            return Found(_decode(record.value.value), record.value.expiration)
        entries = {
            _decode(subkey): Found(_decode(entry.value), entry.expiration)
            for subkey, entry in record.subkeys.items()
            if entry.expiration > now
        }
        return Found(None, record.expiration, entries) if entries else None


def _record_from(message: wire.RecordMessage | None) -> Record | None:
    if message is None:
        return None
    if message.subkeys is None:
        if message.value is None:
            return None
        return Record(Entry(message.value, message.expiration))
    return Record(None, {e.subkey: Entry(e.value, e.expiration) for e in message.subkeys})


def _record_message(record: Record, budget: int) -> tuple[wire.RecordMessage | None, bool]:
    """Encode a record for a find reply within ``budget`` bytes; (None, True) if it does not fit."""
    if record.value is not None:
        if len(record.value.value) + 16 > budget:
            return None, True
        return wire.RecordMessage(record.value.value, record.value.expiration), False
    size = sum(len(s) + len(e.value) + 16 for s, e in record.subkeys.items())
    if size > budget or len(record.subkeys) > wire.MAX_SUBKEYS_PER_RECORD:
        return None, True
    entries = [wire.SubEntry(s, e.value, e.expiration) for s, e in record.subkeys.items()]
    return wire.RecordMessage(None, record.expiration, entries), False


def _items_from_record(target: NodeID, record: Record) -> list[wire.StoreItem]:
    raw = id_to_bytes(target)
    if record.value is not None:
        return [wire.StoreItem(raw, None, record.value.value, record.value.expiration)]
    return [
        wire.StoreItem(raw, subkey, entry.value, entry.expiration) for subkey, entry in record.subkeys.items()
    ]


__all__ = ["ID_BITS", "BootstrapError", "DHTConfig", "DHTError", "DHTNode", "Found"]
