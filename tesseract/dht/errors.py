"""What DHT operations raise."""

from __future__ import annotations

import enum
from collections.abc import Sequence


class DHTErrorCode(enum.StrEnum):
    """Error codes the DHT answers with, besides the RPC layer's own (``tesseract.net.ErrorCode``)."""

    CLOCK_SKEW = "clock_skew"  # the sender's clock disagrees with ours beyond the allowed skew


class DHTError(Exception):
    """A DHT operation could not be carried out."""


class BootstrapError(DHTError):
    """None of the initial peers answered."""


class RecordUnavailable(DHTError):
    """Peers hold a record under ``key`` but none could serve it whole, and no other copy was found."""

    def __init__(self, key: object, holders: Sequence[str]) -> None:
        self.key = key
        self.holders = list(holders)
        super().__init__(
            f"the record under {key!r} is held by {len(self.holders)} peers "
            f"({', '.join(self.holders[:4])}{', ...' if len(self.holders) > 4 else ''}) "
            "but none could serve it whole"
        )
