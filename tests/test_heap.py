"""typha.heap: freed malloc'd memory stays in the process until trimmed, and a trim returns it.

Measured on this process's own RSS (/proc/self/statm) with buffers of 64 KiB: larger than
CPython's small-object limit (so they come from malloc) and below glibc's mmap threshold (so
they live in the heap, as the list's pages and a snapshot's bodies do)."""

from __future__ import annotations

import os

import pytest
import trio

from typha import heap

pytestmark = pytest.mark.skipif(not heap.available(), reason="needs glibc's malloc_trim")

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def grow_and_free(total: int = 64 * MIB) -> tuple[int, int]:
    """Allocate ``total`` bytes in 64 KiB buffers, touch them, free all but the last one (it
    pins the heap's top, so glibc cannot shrink the heap from the top on its own). Returns
    (RSS growth while they were alive, RSS growth left after freeing them).

    It trims first: memory earlier tests freed would otherwise be reused without new pages
    (in the whole suite the buffers grew RSS by only 19 MB)."""
    heap.trim()
    before = rss()
    bufs = [bytearray(b"x" * (64 << 10)) for _ in range(total // (64 << 10))]
    grown = rss() - before
    keep = bufs.pop()
    del bufs
    grow_and_free.keep = keep  # type: ignore[attr-defined]
    return grown, rss() - before


def test_freed_heap_memory_stays_until_trimmed_then_returns() -> None:
    grown, left = grow_and_free()
    assert grown > 48 * MIB  # the buffers were really resident
    # Freed, they stay resident (what the server's trims are for) ...
    assert left > grown - 8 * MIB
    after_free = rss()
    # ... until the trim gives them back.
    assert heap.trim() is True
    assert after_free - rss() > 40 * MIB


async def test_trim_in_thread_returns_memory() -> None:
    grow_and_free()
    after_free = rss()
    assert await heap.trim_in_thread() is True
    assert after_free - rss() > 40 * MIB


async def test_trim_periodically_trims_on_its_interval() -> None:
    grow_and_free()
    after_free = rss()
    with trio.move_on_after(0.02):
        await heap.trim_periodically(interval=10.0)  # first trim only after the interval
    assert after_free - rss() < 4 * MIB
    with trio.move_on_after(0.5):
        await heap.trim_periodically(interval=0.05)
    assert after_free - rss() > 40 * MIB
