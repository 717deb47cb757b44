"""Tesseract: decentralized mixture-of-experts training over volunteer machines.

The import package is ``tesseract``; the distribution is ``tesseract-moe``.
"""

from typing import Any

__version__ = "0.1.0"

#: The client API, importable from the top (``tesseract.Client``); loaded on first use, because it
#: loads torch, which a DHT-only process never needs.
_CLIENT_NAMES = {
    "Client",
    "ExpertError",
    "MixtureError",
    "RemoteExpert",
    "RemoteMixtureOfExperts",
    "RemoteSwitchMixtureOfExperts",
}
__all__ = ["__version__", *sorted(_CLIENT_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from tesseract import client

        return getattr(client, name)
    raise AttributeError(f"module 'tesseract' has no attribute {name!r}")
