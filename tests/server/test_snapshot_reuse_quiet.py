"""A snapshot nothing has changed since stays current past ``SnapshotReuseSecs``: a long join on
a quiet datastore shares one generation instead of building (and holding) a new one every
``SnapshotReuseSecs``. Once something changes, an expired snapshot is rebuilt as before."""

from __future__ import annotations

import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha.model.keys import SyncerType
from typha.sync.memory import MemoryDatastore

FELIX = SyncerType("felix")
REUSE_SECS = 0.2


async def _join(address: str, name: str, nursery: trio.Nursery) -> SyncClient:
    client = SyncClient([address], name)
    nursery.start_soon(client.run)
    with trio.fail_after(10):
        await client.in_sync.wait()
    return client


async def test_an_unchanged_snapshot_is_reused_past_its_age_and_rebuilt_after_a_change() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    async with (
        run_typha(ds, make_config(SnapshotReuseSecs=REUSE_SECS)) as typha,
        trio.open_nursery() as nursery,
    ):
        cache = typha.server.snapshots[FELIX]
        view = typha.feed.views[FELIX]
        first = await _join(typha.address, "quiet-0", nursery)
        snap = cache._current
        assert snap is not None and cache.generated == 1

        # Quiet datastore, snapshot older than SnapshotReuseSecs: the same bytes are served.
        await trio.sleep(REUSE_SECS * 3)
        second = await _join(typha.address, "quiet-1", nursery)
        assert cache.generated == 1 and cache._current is snap
        assert second.state == first.state == ds.data

        # Positive control: a change, then the age expires: the next joiner gets a new
        # generation that holds the change.
        key, value = wep(7, rev=1)
        head = view.head_seq
        ds.set(key, value)
        await wait_until(lambda: view.head_seq > head)
        await trio.sleep(REUSE_SECS * 3)
        third = await _join(typha.address, "changed-0", nursery)
        assert cache.generated == 2 and cache._current is not snap
        assert cache._current.seq == view.head_seq
        await wait_until(lambda: all(c.state == ds.data for c in (first, second, third)))
        nursery.cancel_scope.cancel()
