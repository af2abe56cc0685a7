"""The shared fan-out: one task per syncer view writes each new run of breadcrumbs to every
idle, caught-up client with one direct write, without waking any task.

The bytes come from each client's codec (``fastpath.FastPathCodec``): a run is joined once per
codec, and that one buffer goes to every client of the codec. Clients that are behind, busy or
on TLS (whose writer never hands its socket over) are woken to follow on their own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio

from typha import metrics
from typha.cache.view import Breadcrumb, SyncerView
from typha.model.keys import SyncerType

from .fastpath import FastPathClient, FastPathCodec

# The fan-out catches idle clients up directly when they are at most this many breadcrumbs
# behind (one writev; IOV_MAX is 1024); further behind, their own writer follows the history.
MAX_CATCH_UP = 512

# The coalescing window is at least as long as the previous run over all clients, so that
# with many clients the runs (whose cost grows with clients x runs, not with updates) take at
# most about half of the loop. Not more: a run's length also grows with what it carries, so a
# window of k runs feeds back on itself and runs away once k x (the share of the loop spent
# writing) nears 1 — a factor of 2 took bench_core's p50 at 4,000 updates/s x 500 clients from
# 32 to 136 ms (docs/benchmarks.md, "Structure change guard"). The 500-gob-client shape is kept
# valid by writers stopping at the fan-out's mark (FanOutMark), not by a longer window.
WINDOW_PER_RUN = 1.0


class FanOutMark:
    """The last breadcrumb a view's fan-out has taken into a run (or skipped, with no clients).

    Breadcrumbs after it are the fan-out's next run, which writes them to every idle client,
    coalesced. A connection's writer that is behind therefore writes only up to the mark and
    then goes idle: the breadcrumbs after it reach the client in the fan-out's next run (one
    direct write) instead of one writer-task write per breadcrumb as they arrive, which cost
    ~20x as much and kept clients that once fell behind off the fast path for good.
    """

    __slots__ = ("seq",)

    def __init__(self, seq: int = -1) -> None:
        self.seq = seq


class FanOut:
    def __init__(
        self,
        syncer: SyncerType,
        view: SyncerView,
        wait_for_crumb: Callable[[SyncerType, int], Awaitable[None]],
        clients: Collection[FastPathClient],
        interval: float,
        mark: FanOutMark | None = None,
    ) -> None:
        self.syncer = syncer
        self.view = view
        self.wait_for_crumb = wait_for_crumb
        self.clients = clients  # the server's live set of this view's clients
        self.interval = interval
        self.mark = mark if mark is not None else FanOutMark()

    async def run(self) -> None:
        """Write each new run of breadcrumbs to every caught-up client with one direct write."""
        view = self.view
        syncer = self.syncer
        label = str(syncer)
        direct_writes = metrics.fanout_direct_writes.labels(label)
        slow = metrics.fanout_slow_wakeups.labels(label)
        latency = metrics.client_latency_secs.labels(label)
        wait_secs = metrics.fanout_wait_secs.labels(label)
        run_hist = metrics.fanout_run_secs.labels(label)
        kvs_per_msg = metrics.kvs_per_msg.labels(label)
        seq_gauge = metrics.breadcrumb_seq_number.labels(label)
        size_gauge = metrics.cache_size.labels(label)
        interval = self.interval
        mark = self.mark
        last = mark.seq = view.head_seq
        run_secs = 0.0  # how long the previous run over all clients took
        while True:
            await self.wait_for_crumb(syncer, last)
            # Coalesce a burst into one write per client. The window runs from the birth of
            # the oldest unsent breadcrumb, not from now: breadcrumbs that arrived while the
            # previous run was writing have waited long enough already. It grows with the
            # previous run's duration (WINDOW_PER_RUN), which is wall time: on a loaded machine
            # the runs stretch and coalesce more, as Go Typha batches once behind.
            window = max(interval, WINDOW_PER_RUN * run_secs)
            if window:
                oldest = next(view.crumbs_after(last), None)
                wait = window if oldest is None else window - (view.clock() - oldest.timestamp)
                if wait > 0:
                    await trio.sleep(wait)
                else:
                    await trio.lowlevel.checkpoint()  # never hog the loop between runs
            first, last = last + 1, view.head_seq
            mark.seq = last
            seq_gauge.set(last)
            size_gauge.set(len(view))
            conns = self.clients
            if not conns:
                continue
            if view.oldest_seq > first:
                for conn in conns:
                    conn.wake()
                continue
            run_started = time.monotonic()
            started = view.clock()  # the breadcrumbs' clock
            crumbs = list(view.crumbs_after(first - 1))
            oldest_age = run_started - crumbs[0].timestamp
            n, written, writes_by_kvs = self._write_run(crumbs, first, last, slow)
            run_secs = time.monotonic() - run_started
            run_hist.observe(run_secs)
            for crumb in crumbs:  # per KV, as the clients sample latency
                metrics.observe_many(wait_secs, started - crumb.timestamp, crumb.n_kvs)
            if n:
                direct_writes.inc(n)
                for kvs, times in writes_by_kvs.items():
                    metrics.observe_many(kvs_per_msg, kvs, times)
                latency.observe(oldest_age)
                metrics.bytes_sent.labels(label).inc(written)

    def _write_run(
        self, crumbs: list[Breadcrumb], first: int, last: int, slow: Any
    ) -> tuple[int, int, dict[int, int]]:
        """One pass over the clients: (direct writes made, bytes written, writes by the
        number of KVs they carried)."""
        view = self.view
        # The run joined once per codec, on first use.
        shared: dict[FastPathCodec, bytes] = {}
        # Frames for idle clients a little behind, by (position, codec): a hiccup leaves many
        # clients at the same few positions.
        behind: dict[tuple[int, FastPathCodec], list[bytes]] = {}
        oldest_seq = view.oldest_seq
        n = 0
        written = 0
        # Counted per kind of write, not per client (this loop is the hot path): catch-up
        # writes by the KVs they carried; every other direct write carried the whole run.
        catch_up_writes = 0
        writes_by_kvs: dict[int, int] = {}
        behind_kvs: dict[int, int] = {}  # KVs from a position to ``last``
        for conn in list(self.clients):
            codec = conn.codec
            pos = conn.next_seq
            if pos == first:
                data = shared.get(codec)
                if data is None:
                    data = shared[codec] = b"".join([codec.crumb_bytes(c) for c in crumbs])
                wrote = conn.try_fast_write(first, last, data)
            elif pos > last:
                # Already has the whole run: it joined with a snapshot newer than the run's
                # start (the run was still in its window). Waking it would take its socket
                # from the fast path for nothing.
                continue
            elif oldest_seq <= pos <= last and last - pos < MAX_CATCH_UP:
                # A little behind the run's start, or (joined mid-window) part-way into it:
                # the frames from its own position, shared by clients at that position.
                parts = behind.get((pos, codec))
                if parts is None:
                    parts = behind[pos, codec] = [
                        codec.crumb_bytes(c) for c in view.crumbs_after(pos - 1)
                    ]
                wrote = conn.try_fast_catch_up(last, parts)
                if wrote >= 0:
                    kvs = behind_kvs.get(pos)
                    if kvs is None:
                        kvs = behind_kvs[pos] = sum(c.n_kvs for c in view.crumbs_after(pos - 1))
                    writes_by_kvs[kvs] = writes_by_kvs.get(kvs, 0) + 1
                    catch_up_writes += 1
            else:
                wrote = -1
            if wrote >= 0:
                n += 1
                written += wrote
            else:
                conn.wake()
                slow.inc()
        run_writes = n - catch_up_writes
        if run_writes:
            run_kvs = sum(c.n_kvs for c in crumbs)
            writes_by_kvs[run_kvs] = writes_by_kvs.get(run_kvs, 0) + run_writes
        return n, written, writes_by_kvs
