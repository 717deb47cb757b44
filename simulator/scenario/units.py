"""Quantities with units, as scenario files write them (Shadow's style): ``"50 ms"``, ``"2 h"``,
``"10 Mbit"``, ``"4 MiB"``. A bare number is seconds, bytes, or bytes per second.

Bandwidth units name bits or bytes per second (``"10 Mbit"`` and ``"10 Mbps"`` are 10 megabits per
second, ``"1 MiB"`` a mebibyte per second), since a link's capacity is always a rate.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z/]*)\s*$")

_SECONDS = {
    "": 1.0,
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}

_BYTES = {
    "": 1,
    "B": 1,
    "byte": 1,
    "bytes": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}

_BITS = {
    "bit": 1,
    "kbit": 1000,
    "Kbit": 1000,
    "Mbit": 1000**2,
    "Gbit": 1000**3,
    "Kibit": 1024,
    "Mibit": 1024**2,
    "Gibit": 1024**3,
    # With the "ps" of "Mbps" taken off, as network figures are usually written.
    "kb": 1000,
    "Kb": 1000,
    "Mb": 1000**2,
    "Gb": 1000**3,
}


def _split(value: object, what: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got a boolean")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            raise ValueError(f"expected {what} such as {_EXAMPLES[what]}, got {value!r}")
        number, unit = float(match.group(1)), match.group(2)
    else:
        raise ValueError(f"expected {what}, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite {what}, got {value!r}")
    return number, unit


_EXAMPLES = {
    "a duration": "'50 ms' or '2 h'",
    "a size": "'4 MiB' or '512 kB'",
    "a bandwidth": "'10 Mbit' or '1 MiB'",
}


def parse_duration(value: object) -> float:
    """Seconds, from a number (seconds) or text with a unit; never negative."""
    number, unit = _split(value, "a duration")
    unit = unit.rstrip("/")
    if unit not in _SECONDS:
        raise ValueError(f"unknown time unit {unit!r} in {value!r}: use ns, us, ms, s, min, h or d")
    seconds = number * _SECONDS[unit]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes, from a number or text with a unit (B, kB, MB, GB, KiB, MiB, GiB); never negative."""
    number, unit = _split(value, "a size")
    if unit not in _BYTES:
        raise ValueError(f"unknown size unit {unit!r} in {value!r}: use B, kB, MB, GB, KiB, MiB or GiB")
    size = number * _BYTES[unit]
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return round(size)


def parse_bandwidth(value: object) -> float:
    """Bytes per second, from a number (bytes/s) or text: bits (``Mbit``) or bytes (``MiB``) per second
    (a trailing ``/s`` or ``ps`` is allowed). Must be positive."""
    number, unit = _split(value, "a bandwidth")
    for suffix in ("/s", "ps"):
        if unit.endswith(suffix) and unit != suffix:
            unit = unit[: -len(suffix)]
            break
    if unit in _BITS:
        rate = number * _BITS[unit] / 8
    elif unit in _BYTES:
        rate = number * _BYTES[unit]
    else:
        raise ValueError(f"unknown bandwidth unit {unit!r} in {value!r}: use Kbit, Mbit, Gbit, kB, MB or MiB")
    if rate <= 0:
        raise ValueError(f"a bandwidth must be positive, got {value!r}")
    return rate


def format_duration(seconds: float) -> str:
    """A compact human form: ``'250 ms'``, ``'42 s'``, ``'12.5 min'``, ``'2 h'``."""
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


__all__ = ["format_duration", "parse_bandwidth", "parse_duration", "parse_size"]
