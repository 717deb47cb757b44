"""The expert uid grammar: ``name.i.j...``, a name and one integer coordinate per grid dimension.

A *prefix* is a uid cut after any number of coordinates (``ffn``, ``ffn.3``). Servers announce, for
every proper prefix of each uid, which next coordinate is alive under it; the beam search walks the
grid one prefix level at a time. Everything here is pure string handling: no DHT, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

UID_DELIMITER = "."
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
MAX_COORDINATE = 1_000_000


class ExpertInfo(NamedTuple):
    uid: str
    endpoint: str


def parse_uid(uid: str) -> tuple[str, tuple[int, ...]]:
    """Split ``name.i.j`` into the name and its coordinates; ValueError naming the problem."""
    if not isinstance(uid, str):
        raise ValueError(f"expert uid must be a string, got {type(uid).__name__}")
    name, *coordinates = uid.split(UID_DELIMITER)
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad expert uid {uid!r}: the name must match {_NAME.pattern}")
    if not coordinates:
        raise ValueError(f"bad expert uid {uid!r}: expected at least one grid coordinate, like 'ffn.0'")
    values = []
    for text in coordinates:
        if not text.isdigit() or int(text) >= MAX_COORDINATE or (len(text) > 1 and text[0] == "0"):
            raise ValueError(
                f"bad expert uid {uid!r}: coordinate {text!r} is not an integer in [0, {MAX_COORDINATE})"
            )
        values.append(int(text))
    return name, tuple(values)


def parse_prefix(prefix: str) -> tuple[str, tuple[int, ...]]:
    """Like ``parse_uid`` but zero coordinates are allowed (``ffn`` is the prefix of every ffn expert)."""
    if not isinstance(prefix, str):
        raise ValueError(f"expert prefix must be a string, got {type(prefix).__name__}")
    if UID_DELIMITER not in prefix:
        if not _NAME.fullmatch(prefix):
            raise ValueError(f"bad expert prefix {prefix!r}: the name must match {_NAME.pattern}")
        return prefix, ()
    return parse_uid(prefix)


def uid_prefixes(uid: str) -> list[tuple[str, int]]:
    """(prefix, next coordinate) for every proper prefix of ``uid``."""
    name, coordinates = parse_uid(uid)
    return [
        (UID_DELIMITER.join([name, *map(str, coordinates[:depth])]), coordinates[depth])
        for depth in range(len(coordinates))
    ]


def grid_uids(prefix: str, grid: Sequence[int]) -> list[str]:
    """Every uid of a grid under ``prefix``, in order: ``ffn``, (2, 3) -> ``ffn.0.0`` ... ``ffn.1.2``."""
    uids = [prefix]
    for size in grid:
        uids = [f"{uid}{UID_DELIMITER}{coordinate}" for uid in uids for coordinate in range(size)]
    return uids


__all__ = [
    "MAX_COORDINATE",
    "UID_DELIMITER",
    "ExpertInfo",
    "grid_uids",
    "parse_prefix",
    "parse_uid",
    "uid_prefixes",
]
