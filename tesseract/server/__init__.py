"""The expert server: serves experts over RPC and announces them to the DHT.

``ExpertServer`` loads torch on first use, so the CLI can build its parser without it.
"""

from typing import Any

__all__ = ["ExpertServer"]


def __getattr__(name: str) -> Any:
    if name == "ExpertServer":
        from tesseract.server.server import ExpertServer

        return ExpertServer
    raise AttributeError(f"module 'tesseract.server' has no attribute {name!r}")
