"""Address validation without I/O or per-peer state: tokens that prove a peer receives our datagrams.

A token is a keyed BLAKE2b of (address, epoch) under a secret only this node knows, so it can be
checked without remembering whom it was given to, and only someone who received it at that address
can send it back. A token is valid during the epoch it was issued in and the next one.

The rule it serves (QUIC's anti-amplification limit): a reply to an address that has not shown a valid
token may be at most ``AMPLIFICATION_LIMIT`` times the size of the request, so a spoofed request can
never make this node send its victim much more than the spoofer sent.
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_BYTES = 16
AMPLIFICATION_LIMIT = 3
#: A datagram carries more than its payload: the 3-byte header and an envelope, of which a request's
#: is at least 17 bytes (tag, id, an 8-letter method name, a 32-bit timeout), a response's at most 14
#: (tag, 64-bit id).
MIN_REQUEST_OVERHEAD = 3 + 17
MAX_REPLY_OVERHEAD = 3 + 14
#: A request may encode smaller than this node re-encodes it: its time as a 32-bit float (4 bytes
#: less), its trailing default fields left out (5 bytes less for a find), and a byte to spare.
REENCODING_SLACK = 10


class AddressTokens:
    #: Tokens of the current epoch kept, so that a busy node hashes once per peer and epoch rather
    #: than once per reply; past this many peers the cache starts over.
    CACHE_SIZE = 4096

    def __init__(self, secret: bytes, epoch: float = 600.0) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must have at least 16 bytes")
        self._secret = secret[:64]
        self.epoch = epoch
        self._cache_epoch = -1
        self._cache: dict[str, bytes] = {}

    def issue(self, address: str, now: float) -> bytes:
        epoch = int(now // self.epoch)
        if epoch != self._cache_epoch or len(self._cache) >= self.CACHE_SIZE:
            self._cache_epoch, self._cache = epoch, {}
        token = self._cache.get(address)
        if token is None:
            token = self._cache[address] = self._token(address, epoch)
        return token

    def valid(self, address: str, token: bytes, now: float) -> bool:
        if len(token) != TOKEN_BYTES:
            return False
        if hmac.compare_digest(token, self.issue(address, now)):
            return True
        return hmac.compare_digest(token, self._token(address, int(now // self.epoch) - 1))

    def _token(self, address: str, epoch: int) -> bytes:
        data = epoch.to_bytes(8, "big", signed=True) + address.encode()
        return hashlib.blake2b(data, key=self._secret, digest_size=TOKEN_BYTES).digest()


def within_amplification_limit(request_payload_bytes: int, reply_payload_bytes: int) -> bool:
    """Whether a reply may go to an unvalidated address, from payload sizes as this node encodes them.

    The request's size is counted low and the reply's high, so the datagrams on the wire always keep
    within the limit."""
    request = request_payload_bytes - REENCODING_SLACK + MIN_REQUEST_OVERHEAD
    return reply_payload_bytes + MAX_REPLY_OVERHEAD <= AMPLIFICATION_LIMIT * request


def smallest_request_for(reply_payload_bytes: int) -> int:
    """The smallest request payload that ``within_amplification_limit`` lets draw this reply."""
    datagram = -(-(reply_payload_bytes + MAX_REPLY_OVERHEAD) // AMPLIFICATION_LIMIT)
    return datagram - MIN_REQUEST_OVERHEAD + REENCODING_SLACK


__all__ = [
    "AMPLIFICATION_LIMIT",
    "TOKEN_BYTES",
    "AddressTokens",
    "smallest_request_for",
    "within_amplification_limit",
]
