"""A connection's writer leaves the breadcrumbs after the fan-out's mark to the fan-out.

With 500 clients and one KV per breadcrumb, writers that were woken (by a ping, by a short
write) wrote each new breadcrumb themselves as it arrived, at ~20x the cost of the fan-out's
direct write, and kept their clients off the fast path (docs/benchmarks.md, "500 gob
clients"). Now a writer writes only up to the fan-out's mark.
"""

from __future__ import annotations

import trio

from felix_client.sync_client import SyncClient
from tests.server.test_fanout_basic import wait_until, wep
from tests.typha_harness import make_config, run_typha
from typha import metrics
from typha.sync.memory import MemoryDatastore


def _count(counter) -> float:  # type: ignore[no-untyped-def]
    return counter.labels("felix")._value.get()


async def test_a_woken_writer_leaves_new_breadcrumbs_to_the_fan_outs_next_run() -> None:
    # A long coalescing window and frequent pings: the writer wakes many times while new
    # breadcrumbs wait for the fan-out's run.
    cfg = make_config(ServerFanoutIntervalSecs=1.0, ServerPingIntervalSecs=0.02)
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        await wait_until(lambda: conn.write_token.free, 5)
        writer_writes = _count(metrics.breadcrumb_non_block)
        writer_idles = _count(metrics.breadcrumb_block)
        runs = _count(metrics.fanout_direct_writes) + _count(metrics.fanout_slow_wakeups)
        for i in range(10, 15):
            ds.set(*wep(i))
            await trio.sleep(0.05)
        await wait_until(lambda: client.state == ds.data, 10)
        # Control: the writer was woken (pings) and went idle again several times while
        # the breadcrumbs waited, so it could have written them.
        assert _count(metrics.breadcrumb_block) - writer_idles >= 3
        # It wrote them at most once, all five together: the fan-out's run delivered them,
        # with one direct write, or by handing the run to the writer if it found the writer
        # busy with a ping. Before, the writer wrote each one at its next wake-up.
        assert _count(metrics.breadcrumb_non_block) - writer_writes <= 1
        assert _count(metrics.fanout_direct_writes) + _count(metrics.fanout_slow_wakeups) > runs
        assert conn.next_seq == typha.feed.views[conn.syncer].head_seq + 1
        nursery.cancel_scope.cancel()
