"""Which woken writer may write past the fan-out's mark.

A writer that finished the rest of a short fast-path write (its client's socket was full when
the fan-out came by) writes on to the head once: the breadcrumbs that arrived meanwhile would
otherwise wait a whole coalescing window for the fan-out's next run, on the one client that is
already late (bench_core's p99). Any other woken writer (a ping) still stops at the mark and
leaves them to the fan-out's next run, one coalesced write (test_fanout_mark.py).
"""

from __future__ import annotations

import trio

from felix_client.sync_client import SyncClient
from tests.server.rawclient import RawClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha import metrics
from typha.protocol import KVKind, KVs, SyncStatus, SyncStatusMsg
from typha.server.ownership import WRITER
from typha.sync.memory import MemoryDatastore

# Long enough that the fan-out's next run cannot come before what each test looks at.
WINDOW = 2.0


def _count(counter) -> float:  # type: ignore[no-untyped-def]
    return counter.labels("felix")._value.get()


async def _new_breadcrumb(view, set_it) -> int:  # type: ignore[no-untyped-def]
    """Apply a change to the datastore; the seq of the breadcrumb it became."""
    before = view.head_seq
    set_it()
    await wait_until(lambda: view.head_seq > before, 5)
    assert view.head_seq == before + 1
    return view.head_seq


def _delta_at(seq: int):  # type: ignore[no-untyped-def]
    return lambda m: isinstance(m, KVs) and m.kind is KVKind.DELTA and m.seq == seq


async def test_a_writer_that_finished_a_short_write_writes_on_past_the_mark() -> None:
    cfg = make_config(
        ServerFanoutIntervalSecs=WINDOW, ServerPingIntervalSecs=60, ServerPongTimeoutSecs=600
    )
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds, cfg) as typha:
        raw = await RawClient.connect(typha.port, rcvbuf=4096)
        await raw.hello(compressions=())
        await raw.read_until(
            lambda m: isinstance(m, SyncStatusMsg) and m.status is SyncStatus.IN_SYNC
        )
        (conn,) = typha.server.connections.values()
        await wait_until(lambda: conn.write_token.free, 5)
        view = typha.feed.views[conn.syncer]
        mark = typha.server.fanout_marks[conn.syncer]
        # A breadcrumb too big for the client's socket: the fan-out's direct write is short
        # and the writer takes over the rest, blocked while the client reads nothing.
        big = await _new_breadcrumb(view, lambda: ds.set(*wep(100, pad=512 << 10)))
        await wait_until(lambda: mark.seq == big and conn.next_seq == big + 1, 10)
        assert conn.write_token.holder == WRITER  # the write was short: the writer has it
        writer_writes = _count(metrics.breadcrumb_non_block)
        # A small breadcrumb after the mark, while that writer is still blocked.
        small = await _new_breadcrumb(view, lambda: ds.set(*wep(101)))
        assert mark.seq == big
        await raw.read_until(_delta_at(small), 10)
        # The client has it, and the fan-out has not taken it into a run: its writer wrote it
        # right after the rest of the short write. (The parent commit left it to the
        # fan-out's next run, a window later: the mark was past it by then.)
        assert mark.seq == big
        assert _count(metrics.breadcrumb_non_block) - writer_writes == 1
        assert conn.next_seq == small + 1
        await raw.aclose()


async def test_a_writer_woken_by_a_ping_leaves_breadcrumbs_past_the_mark_to_the_fan_out() -> None:
    # The other side of the rule: same window, a writer woken often (pings), no short write.
    cfg = make_config(ServerFanoutIntervalSecs=WINDOW, ServerPingIntervalSecs=0.05)
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        await wait_until(lambda: conn.write_token.free, 5)
        view = typha.feed.views[conn.syncer]
        mark = typha.server.fanout_marks[conn.syncer]
        writer_writes = _count(metrics.breadcrumb_non_block)
        small = await _new_breadcrumb(view, lambda: ds.set(*wep(101)))
        idles = _count(metrics.breadcrumb_block)
        # The writer wakes for pings and goes idle again, several times, while the
        # breadcrumb waits behind the mark.
        await wait_until(lambda: _count(metrics.breadcrumb_block) - idles >= 3, WINDOW / 2)
        assert mark.seq < small  # (still in the fan-out's window)
        assert conn.next_seq == small  # nobody wrote it
        # The fan-out's next run writes it (the writer wrote nothing).
        await wait_until(lambda: client.state == ds.data, 10)
        assert mark.seq >= small
        assert _count(metrics.breadcrumb_non_block) - writer_writes <= 1
        nursery.cancel_scope.cancel()
