"""The one error a scenario that cannot run gets."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario that cannot run: ``str()`` is the one message for the user (file, field path, reason)."""

    def __init__(self, file: str, path: str, reason: str) -> None:
        self.file, self.path, self.reason = file, path, reason
        super().__init__(f"{file}: {path}: {reason}" if path else f"{file}: {reason}")


__all__ = ["ScenarioError"]
