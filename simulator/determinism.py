"""Make trio's scheduler deterministic for a simulated run.

trio shuffles each batch of runnable tasks with a module-level ``random.Random`` (``_r``); with
``_ALLOW_DETERMINISTIC_SCHEDULING`` set, it first sorts the batch by task creation order, so seeding
``_r`` fixes the whole interleaving. These are private names (trio's own Hypothesis plugin uses
them), so trio is pinned in pyproject.toml and ``check_trio_internals`` fails loudly if they are gone;
``tests/test_simulator.py`` runs it, so a trio upgrade that drops them is caught by the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio._core._run as trio_run


def check_trio_internals() -> None:
    """Fail loudly if the trio version in use no longer has what the simulator relies on."""
    missing = [name for name in ("_ALLOW_DETERMINISTIC_SCHEDULING", "_r") if not hasattr(trio_run, name)]
    if missing:
        raise RuntimeError(
            f"trio {trio.__version__} lacks {', '.join(missing)}: the simulator cannot make scheduling "
            "deterministic. Install the trio version pinned in pyproject.toml."
        )


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Within this block, trio runs tasks in an order fixed by ``seed``."""
    check_trio_internals()
    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(seed)
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run._r.setstate(saved_state)
