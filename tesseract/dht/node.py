"""A Kademlia DHT node over a host: its lifecycle, its API, lookups, replication and maintenance.

Open one with ``async with DHTNode.start(host, initial_peers=[...]) as node``. It serves ``ping``,
``store`` and ``find`` on the host's datagram endpoint (``handlers.RequestHandler``), and keeps its
routing table and records fresh in the background: stale buckets are refreshed, held records are
republished to the nodes now closest to them, and found values are cached at the closest node that
lacked them. As an asker it keeps the address tokens peers give it (so their finds answer in full),
reads records larger than one reply page by page, and paces its stores when a peer says "flood".
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from tesseract.concurrency import background_nursery
from tesseract.dht import protocol as wire
from tesseract.dht.config import DHTConfig
from tesseract.dht.errors import BootstrapError, DHTError, DHTErrorCode, RecordUnavailable
from tesseract.dht.handlers import RequestHandler
from tesseract.dht.ids import ID_BITS, NodeID, id_from_bytes, id_to_bytes, key_id, random_id
from tesseract.dht.lookup import Lookup
from tesseract.dht.policy import Blacklist
from tesseract.dht.records import (
    Found,
    items_from_record,
    merge_records,
    record_from_message,
    to_found,
)
from tesseract.dht.routing import Peer, RoutingTable
from tesseract.dht.storage import Record, RecordStore
from tesseract.dht.tokens import smallest_request_for
from tesseract.net import DatagramRPC, NetError, RemoteError, Router
from tesseract.net.address import is_address, parse_address
from tesseract.net.host import Host

logger = logging.getLogger(__name__)

Key = str | bytes

_encode = msgspec.msgpack.encode
#: Address tokens remembered per peer address; the oldest is forgotten first (it costs one retry).
MAX_KNOWN_TOKENS = 4_096
#: A record read page by page stops (as unreadable) past this many pages or sub-keys.
MAX_PAGES_PER_RECORD = 256
MAX_SUBKEYS_PER_RECORD = 65_536
#: Store requests one node keeps in flight to one peer.
STORES_IN_FLIGHT_PER_PEER = 8
#: The longest a store waits, per round, on a peer's ``retry_after`` (the peer's word is untrusted).
MAX_STORE_PACING = 5.0
#: What a first find expects back besides the nodes: a reply's own fields, and a small value per key.
REPLY_FIXED_BYTES = 80
EXPECTED_VALUE_BYTES = 128


class DHTNode:
    def __init__(self, host: Host, *, node_id: NodeID | None = None, config: DHTConfig | None = None) -> None:
        self.host = host
        self.config = config or DHTConfig()
        self.node_id = node_id if node_id is not None else random_id(host.random)
        self._raw_id = id_to_bytes(self.node_id)
        self._sender_id = b"" if self.config.client_mode else self._raw_id  # what our requests say
        self.routing = RoutingTable(self.node_id, k=self.config.k, now=trio.current_time())
        self.storage = RecordStore(
            max_entries=self.config.max_records,
            max_bytes=self.config.max_record_bytes,
            max_value_size=self.config.max_value_size + 256,
        )
        self.stats: Counter[str] = Counter()
        self.blacklist = Blacklist(self.config.blacklist_base, self.config.blacklist_max)
        self._last_refreshed: dict[NodeID, float] = {}  # key -> when someone last (re)stored it here
        self._published: dict[tuple[NodeID, bytes | None], wire.StoreItem] = {}  # our own records
        self._peer_tokens: dict[str, bytes] = {}  # address -> the token that peer last gave us
        self.handler = RequestHandler(
            host=host,
            node_id=self.node_id,
            config=self.config,
            routing=self.routing,
            storage=self.storage,
            observe=self._observe,
            refreshed=self._last_refreshed,
            stats=self.stats,
        )
        router = Router(error_codes=DHTErrorCode)
        if not self.config.client_mode:  # a client answers nothing: unknown_method to all
            self.handler.register(router)
        self.rpc = DatagramRPC(host, router)
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
        # Replicas accept store_rate items a second from one address: a large batch takes its time.
        budget = self.config.operation_timeout + len(store_items) / self.config.store_rate
        with trio.move_on_after(budget):
            return await self._replicate(store_items, exclude_self=False)
        return [False] * len(store_items)

    async def get(self, key: Key, *, latest: bool = False, use_local: bool = True) -> Found | None:
        """The value under ``key``, or None. ``latest`` asks every replica and merges the newest;
        ``use_local=False`` ignores what this node holds itself and asks the network.
        ``RecordUnavailable`` if peers hold the record but none could serve it whole."""
        return (await self.get_many([key], latest=latest, use_local=use_local))[key]

    async def get_many(
        self, keys: Sequence[Key], *, latest: bool = False, use_local: bool = True
    ) -> dict[Key, Found | None]:
        now = self.host.wall_time()
        records: dict[NodeID, Record | None] = {}
        targets: list[NodeID] = []
        unreadable: dict[NodeID, list[Peer]] = {}
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
                elif lookup.unreadable:
                    unreadable[target] = lookup.unreadable
        found = {key: to_found(records[key_id(key)], now) for key in keys}
        for key in keys:
            holders = unreadable.get(key_id(key))
            if holders and records[key_id(key)] is None:
                self.stats["gets_unreadable"] += 1
                raise RecordUnavailable(key, [peer.address for peer in holders])
        return found

    async def find_nodes(self, target: NodeID) -> list[Peer]:
        """The k nodes closest to ``target`` that answered, closest first."""
        lookup = Lookup(target, k=self.config.k, alpha=self.config.alpha, own_id=self.node_id)
        with trio.move_on_after(self.config.operation_timeout):
            await self._run_lookups({target: lookup})
        return lookup.closest()

    async def ping(self, address: str) -> bool:
        """Whether a node answers at ``address``; the one we knew there is dropped if none does."""
        request = wire.PingRequest(self._sender_id, self.host.wall_time())
        known = self.routing.node_at(address)
        response = await self._call(address, "dht.ping", request, wire.PingResponse, expected_id=known)
        return response is not None

    # ----- lookups -----------------------------------------------------------------------------

    async def _run_lookups(self, lookups: dict[NodeID, Lookup]) -> None:
        """Drive many lookups at once; requests to the same peer are merged (up to 8 keys each)."""
        now = trio.current_time()
        for target, lookup in lookups.items():
            lookup.add_candidates(self.routing.nearest(target, self.config.k))
            self.routing.lookup_performed(target, now)
        unfinished = {target for target, lookup in lookups.items() if not lookup.done}
        async with trio.open_nursery() as nursery:

            def launch(changed: Iterable[Lookup]) -> None:
                """Send what the lookups that just heard back (only they changed) want sent next."""
                batches: dict[Peer, list[Lookup]] = {}
                for lookup in changed:
                    if lookup.done:
                        unfinished.discard(lookup.target)
                        continue
                    for peer in lookup.next_peers():
                        batches.setdefault(peer, []).append(lookup)
                if not unfinished:
                    # Every lookup has its answer: stop waiting for stragglers (a dead peer's timeout).
                    nursery.cancel_scope.cancel()
                    return
                for peer, group in batches.items():
                    for start in range(0, len(group), wire.MAX_KEYS_PER_FIND):
                        nursery.start_soon(
                            self._query, peer, group[start : start + wire.MAX_KEYS_PER_FIND], launch
                        )

            launch(list(lookups.values()))

    async def _query(
        self, peer: Peer, group: list[Lookup], launch: Callable[[Iterable[Lookup]], None]
    ) -> None:
        want_values = any(lookup.want_value for lookup in group)
        response = await self._find(peer, [lookup.target for lookup in group], want_values)
        if response is None or len(response.results) != len(group):
            for lookup in group:
                lookup.on_failure(peer.node_id)
        else:
            for lookup, result in zip(group, response.results, strict=True):
                record, unreadable = record_from_message(result.record), False
                if result.more and lookup.want_value:
                    record, unreadable = await self._read_pages(peer, lookup.target, record)
                lookup.on_response(
                    peer.node_id, self._peers_from(result.nodes), record, unreadable=unreadable
                )
        launch(group)

    async def _read_pages(
        self, peer: Peer, target: NodeID, record: Record | None
    ) -> tuple[Record | None, bool]:
        """Read the rest of a record whose first page (``record``, or None if nothing fit) came in a
        find reply: (the whole record, False); (None, True) if the record is larger than a reader
        takes (it truly cannot be served); (None, False) if the peer's pages make no sense."""
        cursor = max(record.subkeys) if record is not None and record.is_dictionary else None
        subkeys = len(record.subkeys) if record is not None else 0
        for _ in range(MAX_PAGES_PER_RECORD):
            response = await self._find(peer, [target], True, after=cursor)
            if response is None or len(response.results) != 1:
                break
            result = response.results[0]
            page = record_from_message(result.record)
            if page is None:
                if result.more:
                    # Every value fits a page alone, so an honest peer never says this: it is broken
                    # or hostile, and holds nothing we can use (an absent key must not read as an
                    # unreadable one, or one such peer fails every get of its keys).
                    self.stats["bad_pages"] += 1
                    return None, False
                return record, False
            if page.is_dictionary:
                last = max(page.subkeys)
                if cursor is not None and last <= cursor:
                    self.stats["bad_pages"] += 1  # no progress: broken or hostile, as above
                    return None, False
                cursor = last
                subkeys += len(page.subkeys)
            record = merge_records(record, page)
            if not result.more or not page.is_dictionary:
                return record, False
            if subkeys > MAX_SUBKEYS_PER_RECORD:
                break
        self.stats["records_unreadable"] += 1
        return None, True

    async def _find(
        self, peer: Peer, targets: list[NodeID], want_values: bool, *, after: bytes | None = None
    ) -> wire.FindResponse | None:
        """One find, sent again at once with the token if the peer answered "limited" without one."""
        for _ in range(2):
            token = self._peer_tokens.get(peer.address, b"")
            request = wire.FindRequest(
                self._sender_id,
                self.host.wall_time(),
                [id_to_bytes(target) for target in targets],
                want_values,
                token,
                after,
            )
            if not token:
                request.padding = self._padding(request, peer.address)
            response = await self._call(
                peer.address, "dht.find", request, wire.FindResponse, expected_id=peer.node_id
            )
            if response is None or not response.limited:
                return response
            self.stats["finds_retried_with_token"] += 1
        return None  # it will not take the token it gave us (our address changed?): count as failed

    def _padding(self, request: wire.FindRequest, address: str) -> bytes:
        """Zeros enough for a peer that does not know our address yet to send the reply we expect:
        ``k`` nodes per key with addresses like its own, and a small value (QUIC pads its first
        packets for the same reason)."""
        node_bytes = 24 + len(address.encode()) + 4
        per_key = 8 + self.config.k * node_bytes + (EXPECTED_VALUE_BYTES if request.want_values else 0)
        expected = REPLY_FIXED_BYTES + len(request.keys) * per_key
        missing = smallest_request_for(expected) - len(_encode(request))
        return bytes(min(max(0, missing + 1), wire.MAX_PADDING))

    def _peers_from(self, refs: list[wire.NodeRef]) -> list[Peer]:
        peers = [Peer(id_from_bytes(ref.node_id), ref.address) for ref in refs if is_address(ref.address)]
        if len(peers) < len(refs):
            self.stats["bad_addresses"] += len(refs) - len(peers)
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
        encoded_subkey = None if subkey is None else _encode(subkey)
        if encoded_subkey is not None and len(encoded_subkey) > 256:
            raise ValueError(f"a sub-key encodes to at most 256 bytes, not {len(encoded_subkey)}")
        return wire.StoreItem(id_to_bytes(key_id(key)), encoded_subkey, encoded, expiration)

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
            # A few requests in flight per peer: one at a time, a node storing thousands of
            # records would wait a round trip per 32 items.
            limiter = trio.CapacityLimiter(STORES_IN_FLIGHT_PER_PEER)
            while indices:
                flooded: list[int] = []
                wait = 0.0

                async def send_chunk(chunk: list[int], flooded: list[int]) -> None:
                    nonlocal wait
                    request = wire.StoreRequest(
                        self._sender_id, self.host.wall_time(), [items[i] for i in chunk]
                    )
                    response = await self._call(
                        peer.address, "dht.store", request, wire.StoreResponse, expected_id=peer.node_id
                    )
                    if response is None or len(response.results) != len(chunk):
                        return
                    for i, result in zip(chunk, response.results, strict=True):
                        # "outdated": the replica already holds this or a newer version; that counts.
                        if result in ("stored", "outdated"):
                            accepted[i] = True
                        elif result == "flood":
                            flooded.append(i)
                    if math.isfinite(response.retry_after):
                        wait = max(wait, response.retry_after)

                async def send_limited(chunk: list[int], flooded: list[int]) -> None:
                    async with limiter:
                        await send_chunk(chunk, flooded)

                if len(indices) <= wire.MAX_ITEMS_PER_STORE:  # the common case: no task nor limiter
                    await send_chunk(indices, flooded)
                else:
                    async with trio.open_nursery() as chunks:
                        for start in range(0, len(indices), wire.MAX_ITEMS_PER_STORE):
                            chunk = indices[start : start + wire.MAX_ITEMS_PER_STORE]
                            chunks.start_soon(send_limited, chunk, flooded)
                # Refused for our rate: wait as long as the peer says (within reason) and send again.
                indices = sorted(flooded)
                if indices:
                    self.stats["store_paced"] += len(indices)
                    await trio.sleep(min(max(wait, 0.01), MAX_STORE_PACING))

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
        items = items_from_record(target, lookup.record)
        # A record that takes more than one store request is not cached: a partial copy would be
        # served as if it were the whole record.
        if 0 < len(items) <= wire.MAX_ITEMS_PER_STORE:
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
        if self.blacklist.blocked(address, trio.current_time()):
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
            if exc.code == DHTErrorCode.CLOCK_SKEW:
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
        self.blacklist.answered(address)
        if response.token:
            self._remember_token(address, response.token)
        responder = id_from_bytes(response.responder)
        if expected_id is not None and responder != expected_id:
            self.routing.contact_failed(expected_id)  # another node lives at that address now
        self._observe(responder, address)
        return response

    def _remember_token(self, address: str, token: bytes) -> None:
        tokens = self._peer_tokens
        if address not in tokens and len(tokens) >= MAX_KNOWN_TOKENS:
            del tokens[next(iter(tokens))]
        tokens[address] = token

    def _fail(self, address: str, node_id: NodeID | None) -> None:
        self.blacklist.failed(address, trio.current_time())
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
        self.blacklist.forget_expired(clock)
        self.handler.store_limiter.forget_refilled(clock)
        held = set(self.storage.stored_keys())
        for key in [key for key in self._last_refreshed if key not in held]:
            del self._last_refreshed[key]

    async def republish(self) -> None:
        """Re-store what we hold as a replica (and what we published) on the nodes now closest to it.

        A record some other replica re-stored here during the last interval is skipped: one replica
        per interval is enough (Kademlia's republish optimisation). So is a copy held by a node that
        knows ``num_replicas`` nodes closer to its key: a cache a get left here, or a replica that
        newcomers pushed out. The replicas keep it alive; republishing every cached copy would make
        the traffic grow with every read (the over-caching Kademlia's paper warns of)."""
        now = self.host.wall_time()
        horizon = now - self.config.republish_interval
        items = [
            item
            for item in self._held_items(now)
            if self._last_refreshed.get(key := id_from_bytes(item.key), -math.inf) < horizon
            and self._is_replica(key)
        ]
        self._published = {key: item for key, item in self._published.items() if item.expiration > now}
        items.extend(self._published.values())
        if items:
            with trio.move_on_after(self.config.operation_timeout):
                await self._replicate(items, exclude_self=False)
            self.stats["republished"] += len(items)

    def _is_replica(self, target: NodeID) -> bool:
        """Whether we are among the ``num_replicas`` nodes closest to ``target`` that we know of."""
        closest = self.routing.nearest(target, self.config.num_replicas)
        return len(closest) < self.config.num_replicas or self.node_id ^ target < closest[-1].node_id ^ target

    def _held_items(self, now: float) -> list[wire.StoreItem]:
        items = []
        for target in self.storage.stored_keys():
            record = self.storage.get(target, now)
            if record is not None:
                items.extend(items_from_record(target, record))
        return items


__all__ = [
    "ID_BITS",
    "BootstrapError",
    "DHTConfig",
    "DHTError",
    "DHTNode",
    "Found",
    "RecordUnavailable",
]
