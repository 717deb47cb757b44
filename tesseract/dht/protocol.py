"""DHT messages on the wire (datagram RPC payloads), with their bounds.

Every request carries the sender's id and wall-clock time; every response the responder's. A peer
whose clock is off by more than ``MAX_CLOCK_SKEW`` is told so and otherwise ignored, because record
expirations are absolute times and a skewed clock would make its records live too long or too short.

Every response also carries an *address token* for the requester's address (``tokens.py``). A find
request that returns it proves that the asker receives datagrams at the address it sends from; a
find without a valid token gets only a reply at most three times the size of its request, or, when
the full reply is larger, an empty one with ``limited`` set: ask again, with the token. So a DHT node
never sends a spoofed victim more than three times what the spoofer sent (QUIC's rule). A first find
to a peer is padded to a third of the reply it expects (the closest nodes and a small value), so a
lookup does not pay a round trip for each stranger it meets; only large records wait for the token.

A dictionary record larger than one reply is served in pages: sub-keys in ascending order of their
encoded bytes, as many as fit, and ``more`` set; the asker asks for that key alone with ``after`` =
the last sub-key it got, until ``more`` is clear.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from tesseract.dht.ids import ID_BYTES

RawID = Annotated[bytes, msgspec.Meta(min_length=ID_BYTES, max_length=ID_BYTES)]
#: A requester's id, or empty for a client-mode node (a trainer): it asks, it is never asked, and
#: nobody puts it in a routing table. Any other length is rejected by the handler.
SenderID = Annotated[bytes, msgspec.Meta(max_length=ID_BYTES)]
AddressText = Annotated[str, msgspec.Meta(min_length=3, max_length=128)]
SubKeyBytes = Annotated[bytes, msgspec.Meta(max_length=256)]
MAX_VALUE_BYTES = 16_384
ValueBytes = Annotated[bytes, msgspec.Meta(max_length=MAX_VALUE_BYTES)]
#: An address token (empty: none known).
TokenBytes = Annotated[bytes, msgspec.Meta(max_length=32)]
StoreReason = Annotated[str, msgspec.Meta(max_length=16)]

MAX_KEYS_PER_FIND = 8
MAX_ITEMS_PER_STORE = 32
MAX_NODES_PER_RESULT = 32
MAX_SUBKEYS_PER_PAGE = 4096
MAX_PADDING = 16_384


class NodeRef(msgspec.Struct, array_like=True):
    node_id: RawID
    address: AddressText


class PingRequest(msgspec.Struct, tag="dht.ping", array_like=True):
    sender: SenderID
    time: float


class PingResponse(msgspec.Struct, tag="dht.pong", array_like=True):
    responder: RawID
    time: float
    token: TokenBytes = b""


class StoreItem(msgspec.Struct, array_like=True):
    key: RawID
    subkey: SubKeyBytes | None
    value: ValueBytes
    expiration: float


class StoreRequest(msgspec.Struct, tag="dht.store", array_like=True):
    sender: SenderID
    time: float
    items: Annotated[list[StoreItem], msgspec.Meta(max_length=MAX_ITEMS_PER_STORE)]


class StoreResponse(msgspec.Struct, tag="dht.stored", array_like=True):
    responder: RawID
    time: float
    #: Per item: "stored", or why not ("outdated", "expired", "too_far", "too_large", "full", "flood").
    results: Annotated[list[StoreReason], msgspec.Meta(max_length=MAX_ITEMS_PER_STORE)]
    token: TokenBytes = b""
    #: For "flood": seconds until this sender's refused items would be accepted.
    retry_after: float = 0.0


class FindRequest(msgspec.Struct, tag="dht.find", array_like=True):
    sender: SenderID
    time: float
    keys: Annotated[list[RawID], msgspec.Meta(min_length=1, max_length=MAX_KEYS_PER_FIND)]
    want_values: bool
    #: The token the responder last gave us, or empty.
    token: TokenBytes = b""
    #: The next page of a dictionary record: its sub-keys after this one (a request for one key).
    after: SubKeyBytes | None = None
    #: Zeros that make a first request (no token yet) big enough to draw its full reply.
    padding: Annotated[bytes, msgspec.Meta(max_length=MAX_PADDING)] = b""


class SubEntry(msgspec.Struct, array_like=True):
    subkey: SubKeyBytes
    value: ValueBytes
    expiration: float


class RecordMessage(msgspec.Struct, array_like=True):
    """A plain value (``value`` set) or a page of a dictionary (``subkeys`` set)."""

    value: ValueBytes | None
    expiration: float
    subkeys: Annotated[list[SubEntry], msgspec.Meta(max_length=MAX_SUBKEYS_PER_PAGE)] | None = None


class FindResult(msgspec.Struct, array_like=True):
    nodes: Annotated[list[NodeRef], msgspec.Meta(max_length=MAX_NODES_PER_RESULT)]
    record: RecordMessage | None
    #: The record goes on beyond this page: ask for this key alone, ``after`` the last sub-key of
    #: ``record`` (or from the start when ``record`` is None: it did not fit among the other keys).
    more: bool = False


class FindResponse(msgspec.Struct, tag="dht.found", array_like=True):
    responder: RawID
    time: float
    results: Annotated[list[FindResult], msgspec.Meta(max_length=MAX_KEYS_PER_FIND)]
    token: TokenBytes = b""
    #: The full reply was over three times the request and the request had no valid token: nothing
    #: is answered; ask again with ``token``.
    limited: bool = False
