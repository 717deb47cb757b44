"""What a trainer sees when the swarm lets it down: one error type naming the expert and the reason."""

from __future__ import annotations


class ExpertError(RuntimeError):
    """A call to one remote expert failed: timeout, unreachable, a typed error reply, a bad answer."""

    #: What went wrong, for callers that treat failures differently.
    TIMEOUT, UNREACHABLE, REFUSED, BAD_ANSWER, STRAGGLER = (
        "timeout",
        "unreachable",
        "refused",
        "bad_answer",
        "straggler",
    )

    def __init__(
        self, uid: str, endpoint: str, reason: str, kind: str = "refused", code: str | None = None
    ) -> None:
        self.uid = uid
        self.endpoint = endpoint
        self.reason = reason
        self.kind = kind
        #: The error code of a refusal (``bad_request``, ``overloaded``, ...); None for other kinds.
        self.code = code
        super().__init__(f"expert {uid} at {endpoint}: {reason}")


class MixtureError(RuntimeError):
    """A mixture-of-experts layer could not give some sample the answers it needs."""


class SequenceError(RuntimeError):
    """A block of a ``RemoteSequential`` could not be run on any of its replicas."""

    def __init__(self, uid: str, reason: str) -> None:
        self.uid = uid
        self.reason = reason
        super().__init__(f"block {uid}: {reason}")
