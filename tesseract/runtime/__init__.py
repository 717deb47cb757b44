"""The expert runtime: backends (one expert on one device), task pools, and the batching loop."""

from tesseract.runtime.backend import ExpertBackend
from tesseract.runtime.runtime import ExpertStats, Runtime
from tesseract.runtime.schema import ExpertSchema, TensorSchema
from tesseract.runtime.zoo import ZOO, make_expert

__all__ = ["ZOO", "ExpertBackend", "ExpertSchema", "ExpertStats", "Runtime", "TensorSchema", "make_expert"]
