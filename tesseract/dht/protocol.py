"""DHT messages on the wire (datagram RPC payloads), with their bounds.

Every request carries the sender's id and wall-clock time; every response the responder's. A peer
whose clock is off by more than ``MAX_CLOCK_SKEW`` is told so and otherwise ignored, because record
expirations are absolute times and a skewed clock would make its records live too long or too short.
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
ValueBytes = Annotated[bytes, msgspec.Meta(max_length=16_384)]

MAX_KEYS_PER_FIND = 8
MAX_ITEMS_PER_STORE = 32
MAX_NODES_PER_RESULT = 32
MAX_SUBKEYS_PER_RECORD = 1024


class NodeRef(msgspec.Struct, array_like=True):
    node_id: RawID
    address: AddressText


class PingRequest(msgspec.Struct, tag="dht.ping", array_like=True):
    sender: SenderID
    time: float


class PingResponse(msgspec.Struct, tag="dht.pong", array_like=True):
    responder: RawID
    time: float


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
    results: list[str]


class FindRequest(msgspec.Struct, tag="dht.find", array_like=True):
    sender: SenderID
    time: float
    keys: Annotated[list[RawID], msgspec.Meta(min_length=1, max_length=MAX_KEYS_PER_FIND)]
    want_values: bool


class SubEntry(msgspec.Struct, array_like=True):
    subkey: SubKeyBytes
    value: ValueBytes
    expiration: float


class RecordMessage(msgspec.Struct, array_like=True):
    """A plain value (``value`` set) or a dictionary (``subkeys`` set)."""

    value: ValueBytes | None
    expiration: float
    subkeys: Annotated[list[SubEntry], msgspec.Meta(max_length=MAX_SUBKEYS_PER_RECORD)] | None = None


class FindResult(msgspec.Struct, array_like=True):
    nodes: Annotated[list[NodeRef], msgspec.Meta(max_length=MAX_NODES_PER_RESULT)]
    record: RecordMessage | None
    #: The record existed but did not fit this reply: ask for this key alone.
    truncated: bool = False


class FindResponse(msgspec.Struct, tag="dht.found", array_like=True):
    responder: RawID
    time: float
    results: list[FindResult]
