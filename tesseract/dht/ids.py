"""160-bit identifiers and the XOR metric.

Node ids are random; a key's id is the SHA-1 of its UTF-8 (or raw) bytes, so every node maps a key to
the same place in the id space.
"""

from __future__ import annotations

import hashlib
import random

ID_BITS = 160
ID_BYTES = ID_BITS // 8
MAX_ID = 1 << ID_BITS

NodeID = int


def random_id(rng: random.Random) -> NodeID:
    return rng.getrandbits(ID_BITS)


def key_id(key: str | bytes) -> NodeID:
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def id_to_bytes(node_id: NodeID) -> bytes:
    return node_id.to_bytes(ID_BYTES, "big")


def id_from_bytes(data: bytes) -> NodeID:
    if len(data) != ID_BYTES:
        raise ValueError(f"an id is {ID_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def distance(a: NodeID, b: NodeID) -> int:
    return a ^ b
