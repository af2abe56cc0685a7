"""Conflated catch-ups, built once and shared, off the event loop, within a budget.

A catch-up brings a client from an old position ``since`` to the view's head with the latest
value of every key changed since then (``SyncerView.changed_since``). Built per connection on
the event loop, as it once was, it let any client that knows the epoch (it is in every
ServerHello) make the server encode and compress the whole state for it alone, hundreds of
times a second (docs/faults.md, "Hostile cases"). Here, as for snapshots (``snapshot.py``):

* a built catch-up is **shared**: a client at ``since`` gets any current one built from a
  position at or before it (a superset of the changes it missed, each at its latest value, so
  applying the extra ones is harmless), and clients asking while one is being built wait for it;
* building runs in a **worker thread**, at most ``CatchUpCache.limiter`` builds at once
  (server-wide, one by default);
* :meth:`CatchUpCache.admit` decides whether a *resume* gets a catch-up at all: not when it
  would carry more than ``max_share`` of the state (the shared snapshot is then as good), and
  not when building it would exceed the **build budget** (about one state's worth of KVs per
  ``reuse_secs``, the cost of one shared snapshot). A refused resume gets the shared snapshot,
  which is always a correct answer to a resume (docs/protocol.md, §5).

A client already connected that falls out of the history has no snapshot to fall back on: its
catch-up is shared and built off the loop the same way, but not refused (it cannot be
triggered at will: the client must stay connected for the whole history window).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from typha.protocol import (
    BatchDone,
    KVKind,
    SyncStatus,
    SyncStatusMsg,
    best_frame,
    encode_kvs_payload,
    encode_payload,
    frame,
)

from .snapshot import SNAPSHOT_CHUNK_KVS
from .view import SyncerView

# Catch-ups this small are always worth building (a few milliseconds at most), whatever the
# share of a small state they are.
MIN_CATCHUP_KVS = 1000
# Built catch-ups kept per view and encoding.
CACHED_PER_CODEC = 4


@dataclass(slots=True)
class CatchUp:
    """A conflated catch-up from ``since`` to ``seq``: KVs(kind=catch-up) frames, BatchDone,
    SyncStatus, in one encoding (``zstd`` or plain), built once."""

    since: int
    seq: int
    revision: int | None
    n_kvs: int
    created: float
    zstd: bool
    data: bytes


def encode_catchup(
    since: int,
    seq: int,
    revision: int | None,
    status: SyncStatus,
    kvs: list[bytes],
    zstd: bool,
    created: float,
) -> CatchUp:
    """Encode a catch-up (CPU-bound; safe in a worker thread: touches only ``kvs``)."""
    parts: list[bytes] = []
    for i in range(0, len(kvs), SNAPSHOT_CHUNK_KVS):
        payload = encode_kvs_payload(KVKind.CATCHUP, seq, revision, kvs[i : i + SNAPSHOT_CHUNK_KVS])
        parts.append(best_frame(payload) if zstd else frame(payload))
    parts.append(frame(encode_payload(BatchDone(KVKind.CATCHUP, seq, revision, len(kvs)))))
    parts.append(frame(encode_payload(SyncStatusMsg(status))))
    return CatchUp(since, seq, revision, len(kvs), created, zstd, b"".join(parts))


@dataclass
class CatchUpCache:
    """One view's shared catch-ups (see the module docstring).

    ``max_share``: a resume whose catch-up would carry more than this share of the state (but
    at least ``MIN_CATCHUP_KVS``) gets the snapshot instead; ``reuse_secs``: how long a built
    catch-up serves later clients, and the period of the build budget.
    """

    view: SyncerView
    max_share: float = 0.5
    reuse_secs: float = 10.0
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    clock: Callable[[], float] = time.monotonic
    on_built: Callable[[CatchUp], None] | None = None
    # Counters (also exported as metrics by the server).
    built: int = field(default=0, init=False)
    built_kvs: int = field(default=0, init=False)
    reused: int = field(default=0, init=False)
    _cached: list[CatchUp] = field(default_factory=list, init=False)
    # (since, zstd) of the builds in progress, and the event their waiters wait on.
    _building: dict[tuple[int, bool], trio.Event] = field(default_factory=dict, init=False)
    # The build budget, in KVs: refilled at one state's worth per ``reuse_secs``.
    _budget: float = field(default=0.0, init=False)
    _budget_at: float | None = field(default=None, init=False)

    def limit(self) -> int:
        """The largest catch-up (in KVs) a resume is given instead of the snapshot."""
        return max(MIN_CATCHUP_KVS, int(self.max_share * len(self.view)))

    def admit(self, since: int, zstd: bool) -> tuple[bool, str]:
        """May a client resuming from ``since`` (outside the history, inside the tombstones)
        be caught up by conflation? Returns the answer and why not (for the log)."""
        limit = self.limit()
        n = self.view.count_changed_since(since, limit)
        if n > limit:
            return False, f"more than {limit} keys changed since {since}"
        if self._find(since, zstd) is not None or (since, zstd) in self._building:
            return True, ""
        if not self._take_budget(n):
            return False, "catch-up build budget spent"
        return True, ""

    def _take_budget(self, n: int) -> bool:
        now = self.clock()
        capacity = max(MIN_CATCHUP_KVS, len(self.view))
        if self._budget_at is None:
            self._budget = capacity
        else:
            rate = capacity / max(self.reuse_secs, 0.001)
            self._budget = min(capacity, self._budget + (now - self._budget_at) * rate)
        self._budget_at = now
        if n > self._budget:
            return False
        self._budget -= n
        return True

    def _usable(self, c: CatchUp, since: int, zstd: bool) -> bool:
        return (
            c.zstd == zstd
            and c.since <= since <= c.seq
            and self.clock() - c.created < self.reuse_secs
            # The client must be able to follow the breadcrumbs after it.
            and self.view.can_resume_from_seq(c.seq)
        )

    def _find(self, since: int, zstd: bool) -> CatchUp | None:
        """The current catch-up closest to ``since`` that covers it, if any."""
        best = None
        for c in self._cached:
            if self._usable(c, since, zstd) and (best is None or c.since > best.since):
                best = c
        return best

    async def get(self, since: int, zstd: bool) -> CatchUp | None:
        """A catch-up covering a client at ``since``: a current one, the one being built for an
        older or equal position, or a new one (built in a worker thread). None if, by the time
        it could be built, ``since`` fell behind the tombstones (the client needs a snapshot)."""
        while True:
            found = self._find(since, zstd)
            if found is not None:
                self.reused += 1
                return found
            pending = [ev for (s, z), ev in self._building.items() if z == zstd and s <= since]
            if not pending:
                return await self._build(since, zstd)
            await pending[0].wait()

    async def _build(self, since: int, zstd: bool) -> CatchUp | None:
        key = (since, zstd)
        done = self._building[key] = trio.Event()
        try:
            async with self.limiter:
                view = self.view
                if not view.can_catch_up_from_seq(since):
                    return None
                # Taken after the wait for the limiter, so that the catch-up is as recent as
                # possible; taking the references is fast and sees one consistent state.
                kvs = view.changed_since(since)
                seq, revision, status = view.head_seq, view.revision, view.status
                built = await trio.to_thread.run_sync(
                    encode_catchup, since, seq, revision, status, kvs, zstd, self.clock()
                )
            self.built += 1
            self.built_kvs += built.n_kvs
            self._cached = [c for c in self._cached if c.zstd != zstd or self._live(c)]
            self._cached.append(built)
            same = [c for c in self._cached if c.zstd == zstd]
            if len(same) > CACHED_PER_CODEC:
                self._cached.remove(same[0])
            if self.on_built:
                self.on_built(built)
            return built
        finally:
            del self._building[key]
            done.set()

    def _live(self, c: CatchUp) -> bool:
        return self.clock() - c.created < self.reuse_secs and self.view.can_resume_from_seq(c.seq)
