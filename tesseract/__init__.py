"""Tesseract: decentralized mixture-of-experts training over volunteer machines.

The import package is ``tesseract``; the distribution is ``tesseract-moe``.
"""

__version__ = "0.1.0"
