"""Peer addresses as ``host:port`` strings (``[::1]:port`` for IPv6).

One address names a peer for both streams (TCP) and datagrams (UDP): a real node binds both on the
same port, a simulated node owns both channels of its address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import NamedTuple


class Address(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return format_address(self.host, self.port)


def parse_address(text: str) -> Address:
    """Parse ``host:port`` or ``[v6]:port``; raise ValueError naming what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"address must be a non-empty 'host:port' string, got {text!r}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"bad IPv6 address {text!r}: expected '[addr]:port'")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 address {text!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad address {text!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: IPv6 hosts need brackets, '[{host}]:{port_text}'")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in address {text!r}: expected 0..65535")
    return Address(host, int(port_text))


@lru_cache(maxsize=16_384)
def is_address(text: str) -> bool:
    """Whether ``text`` parses as an address; remembered, as peers pass on the same few thousand."""
    try:
        parse_address(text)
    except ValueError:
        return False
    return True


def format_address(host: str, port: int) -> str:
    """The canonical text form: brackets around IPv6 literals."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
