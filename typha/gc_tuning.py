"""The cyclic garbage collector while the first full list loads.

Loading 20,000 endpoints allocates about a million long-lived objects (values, keys, encoded
bytes). With the default thresholds (a young collection every 700 net allocations) the collector
runs thousands of times meanwhile, and every time the heap has grown by a quarter it walks all
of it: at 20,000 endpoints that was ~0.5 s of a ~3 s cold start (docs/benchmarks.md, "Cold
start"). Almost nothing of it is garbage: the objects stay for the life of the process, and
``Typha`` freezes them out of the collector's reach once the first list is in.

So until then the young generation's threshold is raised; cycles are still collected, only
after 100,000 net allocations instead of 700 (a bound, should the first sync never finish).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

LOADING_THRESHOLD = 100_000

_saved: tuple[int, int, int] | None = None


def relax_for_loading() -> None:
    """Raise the young generation's threshold (once; ``restore`` undoes it)."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(max(LOADING_THRESHOLD, _saved[0]), *_saved[1:])


def restore() -> None:
    """Put back the thresholds ``relax_for_loading`` replaced (no-op if it did not run)."""
    global _saved
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None


def relaxed() -> bool:
    return _saved is not None


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside (for a load whose objects all live on or are freed by
    reference counting: the warm restart's cache file)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
