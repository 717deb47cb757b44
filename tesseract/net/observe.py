"""Timing calls for metrics: an optional observer that RPC clients call once per finished call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from tesseract.net.errors import CallTimeout, NetError, RemoteError

T = TypeVar("T")

#: (method, seconds from start to answer or failure, None on success or what went wrong: the remote
#: error code, "timeout" or "unavailable"). Called from the event loop; it must not raise.
CallObserver = Callable[[str, float, "str | None"], None]


async def observed_call(
    observer: CallObserver, method: str, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
) -> T:
    """``await call(*args, **kwargs)``, reported to ``observer`` (a cancelled call is not: the caller
    gave up, the peer did not fail)."""
    started = trio.current_time()
    try:
        result = await call(*args, **kwargs)
    except RemoteError as exc:
        observer(method, trio.current_time() - started, exc.code)
        raise
    except CallTimeout:
        observer(method, trio.current_time() - started, "timeout")
        raise
    except NetError:
        observer(method, trio.current_time() - started, "unavailable")
        raise
    observer(method, trio.current_time() - started, None)
    return result


__all__ = ["CallObserver", "observed_call"]
