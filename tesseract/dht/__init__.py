"""The Kademlia DHT: who serves which expert, with expiring records."""

from tesseract.dht.node import BootstrapError, DHTConfig, DHTError, DHTNode, Found

__all__ = ["BootstrapError", "DHTConfig", "DHTError", "DHTNode", "Found"]
