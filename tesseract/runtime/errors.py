"""The runtime's own errors. It knows nothing of the wire: the server names a wire code for each."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base of the errors the runtime raises."""


class InvalidBatch(RuntimeFailure, ValueError):
    """A batch does not fit its expert: tensor count, dtype, shape, rows, or non-finite values."""


class BatchFailed(RuntimeFailure):
    """An expert's computation raised; every request of that batch gets this error."""
