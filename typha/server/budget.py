"""The server-wide budget for input buffered by clients that have not completed their hello.

Before its hello a client is unauthenticated (with mTLS, it passed the certificate check but
has not said who it is); each connection may buffer only a small amount (64 KiB for gob), and
all of them together at most ``limit`` bytes (docs/protocol.md, "Limits"), so that many
connections stalling half-way through a large declared message cannot exhaust memory. A
connection over the total is closed. ``total`` is exported as a metric for tests and operators.

Memory is given back too: the buffers are freed when their connections close, and as the
total falls the heap is trimmed, so a thousand stalled hellos leave no lasting RSS behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from typha import heap, metrics

log = structlog.get_logger(__name__)

# 1,000 connections at the 64 KiB per-connection cap.
DEFAULT_LIMIT = 64 << 20
# When the total has fallen this far below its peak, the next ``trim`` hands the freed memory
# back to the system (``_trim_heap``, ~2.5 ms per 16 MiB): at most this much freed input stays
# in the process. Well above what a wave of normal hellos holds (~150 bytes each).
TRIM_AFTER = 4 << 20


def _trim_heap() -> None:
    """Return the heap's free pages to the system. The stalled hellos' buffers are 64 KiB
    each, under glibc's mmap threshold, so they live in the heap between other objects; freed,
    they stay in the process (a thousand of them: RSS stayed ~70 MB up) unless trimmed."""
    heap.trim()


@dataclass
class InputBudget:
    limit: int = DEFAULT_LIMIT
    total: int = 0
    peak: int = 0  # the highest total since memory was last handed back to the system
    trims: int = 0
    _held: dict[int, int] = field(default_factory=dict)

    def charge(self, owner: object, buffered: int) -> bool:
        """Record that ``owner`` now holds ``buffered`` bytes; False if that would break the
        total, which then stays as it was (the caller closes the connection at once, then
        calls ``release``): the total never exceeds the limit."""
        key = id(owner)
        total = self.total + buffered - self._held.get(key, 0)
        if total > self.limit:
            return False
        self.total = total
        self._held[key] = buffered
        self.peak = max(self.peak, total)
        metrics.unauthenticated_buffered_bytes.set(total)
        return True

    def release(self, owner: object) -> None:
        held = self._held.pop(id(owner), 0)
        if held:
            self.total -= held
            metrics.unauthenticated_buffered_bytes.set(self.total)

    def trim(self) -> bool:
        """Called periodically (the server's governor): if a wave of stalled hellos has been
        released since the last call, return the freed memory to the system. Not done in
        ``release``: a closing connection's buffers are freed only after it has released them,
        when its task ends."""
        if self.peak - self.total < TRIM_AFTER:
            return False
        self.peak = self.total
        self.trims += 1
        _trim_heap()
        log.info("unauthenticated input released; heap trimmed", trims=self.trims)
        return True
