"""The cache reporter (readiness, cache gauges, update counters) follows status changes at
once but updates at most every REPORT_MIN_INTERVAL_SECS: it used to wake on every update
(at 1,000 writes/s ~5 % of the server's CPU, seen in a py-spy profile of the steady state)."""

from __future__ import annotations

import trio

from tests.typha_harness import make_config, wep
from typha import metrics
from typha.app import REPORT_MIN_INTERVAL_SECS, Typha
from typha.sync.base import Update
from typha.sync.memory import MemoryDatastore


async def test_reports_follow_status_at_once_and_updates_at_a_bounded_pace() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    typha = Typha(make_config(), ds)
    reports = 0
    count = typha._count

    def counting(syncer, view) -> None:  # type: ignore[no-untyped-def]
        nonlocal reports
        reports += 1
        count(syncer, view)

    typha._count = counting  # type: ignore[method-assign]
    views = len(typha.feed.views)
    async with trio.open_nursery() as nursery:
        await nursery.start(typha.run)
        # A status change is reported at once: the cache's readiness right after the first
        # in-sync (the whole readiness also waits for the server's own report).
        cache_health = typha.health._reporters["felix-cache"]
        with trio.fail_after(10):
            while not typha.feed.in_sync:
                await trio.sleep(0.001)
        synced = trio.current_time()
        with trio.fail_after(10):
            while not cache_health.ready:
                await trio.sleep(0.001)
        assert trio.current_time() - synced < 0.05

        # 1 s of updates every 5 ms: at most one report per interval, not one per update.
        total = metrics.updates_total.labels("felix")
        before_total = total._value.get()
        reports = 0
        start = trio.current_time()
        n = 0
        while trio.current_time() - start < 1.0:
            key, value = wep(n % 50, rev=n + 1)
            ds.apply([Update(key, value)])
            n += 1
            await trio.sleep(0.005)
        elapsed = trio.current_time() - start
        per_view = reports / views
        assert n > 100
        assert per_view <= elapsed / REPORT_MIN_INTERVAL_SECS + 2, (per_view, n)
        # ... and they still follow the updates: the counter has them within the interval.
        with trio.fail_after(REPORT_MIN_INTERVAL_SECS + 1):
            while total._value.get() - before_total < n:
                await trio.sleep(0.01)
        assert per_view >= 2  # the reporter did run during the updates
        nursery.cancel_scope.cancel()
