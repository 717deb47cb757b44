"""Structured-concurrency helpers shared by the services (RPC client, DHT node, ...)."""

from __future__ import annotations

import signal
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


def leave_signals_to_the_main_thread() -> None:
    """Call first thing in a helper thread: Ctrl+C and SIGTERM then always reach the main thread.

    Linux hands a process's signal to any thread that does not block it. One taken by a helper
    thread only sets a flag, and a main thread blocked in a system call (waiting for a child, for a
    queue) does not wake to see it: the Ctrl+C is lost until something else wakes it.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
