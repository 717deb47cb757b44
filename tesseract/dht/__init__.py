"""The Kademlia DHT: expiring records, plain or dictionaries, over datagram RPC. What the records
mean is its users' business (``tesseract.server.announce`` writes, ``tesseract.client.discovery``
reads)."""

from tesseract.dht.config import DHTConfig
from tesseract.dht.errors import BootstrapError, DHTError, RecordUnavailable
from tesseract.dht.node import DHTNode
from tesseract.dht.records import Found

__all__ = ["BootstrapError", "DHTConfig", "DHTError", "DHTNode", "Found", "RecordUnavailable"]
