"""Structured-concurrency helpers shared by the services (RPC client, DHT node, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a service's background tasks, cancelled when the body ends.

    trio wraps every exception leaving a nursery in an ExceptionGroup; for a service whose background
    tasks do not raise, that only hides the caller's own exception (a ``BootstrapError`` would arrive
    as a group). Here the body's exception propagates as it was raised.
    """
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_error is not None and list(_leaves(group)) == [body_error]:
            raise body_error from None
        raise


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for item in group.exceptions:
        if isinstance(item, BaseExceptionGroup):
            yield from _leaves(item)
        else:
            yield item
