"""The expert server: serves experts over RPC and announces them to the DHT."""

from tesseract.server.server import ExpertServer

__all__ = ["ExpertServer"]
