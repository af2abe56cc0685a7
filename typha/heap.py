"""Giving freed memory back to the system.

CPython frees small objects into its own arenas (returned when a whole arena empties) and
everything larger than 512 bytes with ``malloc``. glibc's ``free`` keeps those chunks in the
process: only the top of the heap shrinks on its own, so after a burst of short-lived
allocations (the first list's pages and decoded values, a snapshot's encodings once its last
joiner is served) RSS stays at the burst's peak. ``malloc_trim(0)`` returns every free page
(``madvise``), wherever it is in the heap. Measured at 20,000 endpoints: RSS once ready 97 →
77 MiB with one trim after the first sync (docs/benchmarks.md, "Giving memory back").

Trimming walks the free chunks while holding the allocator's lock (about a millisecond with
~100 MiB live), done in a worker thread (ctypes releases the GIL for the call) so the event loop
keeps serving meanwhile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import trio

# How often the server trims in steady state: freed snapshots and churn's transients go back
# within this long. With ~100 MiB live, a trim costs ~0.7 ms of CPU when little is free and
# ~9 ms when it returns ~100 MiB: negligible at this pace.
TRIM_INTERVAL_SECS = 10.0


def _load_malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_malloc_trim = _load_malloc_trim()


def available() -> bool:
    return _malloc_trim is not None


def trim() -> bool:
    """Return the heap's free pages to the system now (in this thread). True if glibc
    released any memory; False if it released none or cannot trim here."""
    return bool(_malloc_trim()) if _malloc_trim is not None else False


async def trim_in_thread() -> bool:
    """``trim`` in a worker thread, so the event loop is not held while glibc walks the heap."""
    if _malloc_trim is None:
        return False
    return await trio.to_thread.run_sync(trim)


async def trim_periodically(interval: float = TRIM_INTERVAL_SECS) -> None:
    """Trim every ``interval`` seconds, forever (no-op where glibc's trim is missing)."""
    if _malloc_trim is None:
        return
    while True:
        await trio.sleep(interval)
        await trim_in_thread()
