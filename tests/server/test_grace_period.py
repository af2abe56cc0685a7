"""ServerNewClientFallBehindGracePeriod, end to end: a new client that is still behind after
its snapshot keeps its position in the history for the grace period, however old it gets;
once the grace period is over, the history moves on without it (and, with the catch-up
feature, it is brought up to date by a conflated catch-up instead of the deltas)."""

from __future__ import annotations

import pytest
import trio

from tests.server.rawclient import RawClient
from tests.typha_harness import make_config, run_typha, wep
from typha import metrics
from typha.protocol import BatchDone, Goodbye, KVKind, KVs
from typha.sync.base import Update
from typha.sync.memory import MemoryDatastore

KEYS = 5000  # x ~2.1 KB: a ~10 MB snapshot, more than the socket buffers hold


async def _churn(ds: MemoryDatastore, stop: trio.Event) -> None:
    r = 0
    while not stop.is_set():
        r += 1
        ds.apply([Update(*wep(i, rev=r, pad=2000)) for i in range(100)])  # ~200 KB
        await trio.sleep(0.05)


@pytest.mark.parametrize("grace", [300.0, 0.01])
async def test_a_slow_new_client_keeps_its_place_for_the_grace_period(grace: float) -> None:
    ds = MemoryDatastore(dict(wep(i, pad=2000) for i in range(KEYS)))
    cfg = make_config(ServerMaxFallBehindSecs=1, ServerNewClientFallBehindGracePeriod=grace)
    used = metrics.connections_grace_used.labels("felix")
    used_before = used._value.get()
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        stop = trio.Event()
        nursery.start_soon(_churn, ds, stop)
        slow = await RawClient.connect(typha.port, rcvbuf=4096)
        await slow.hello(node="slow", compressions=())
        # It reads nothing for 1.5 s: its snapshot write is stuck, the history ages past
        # ServerMaxFallBehindSecs behind it and is held (whatever the grace period).
        await trio.sleep(1.5)
        await slow.read_until(lambda e: isinstance(e, BatchDone), timeout=30)
        # Then it stalls again with more than the socket buffers of deltas still to come:
        # now only the grace period keeps its place.
        await trio.sleep(2.5)
        stop.set()
        head = typha.feed.views["felix"].head_seq
        await slow.read_until(
            lambda e: (
                getattr(e, "seq", None) == head
                and (isinstance(e, BatchDone) or (isinstance(e, KVs) and e.kind is KVKind.DELTA))
            ),
            timeout=60,
        )
        caught_up_by_conflation = any(
            isinstance(e, BatchDone) and e.kind is KVKind.CATCHUP for e in slow.events
        )
        assert not any(isinstance(e, Goodbye) for e in slow.events)
        assert used._value.get() > used_before  # it needed its grace (held past 1 s)
        if grace == 300.0:
            assert not caught_up_by_conflation  # every delta, in order
        else:  # positive control: past the grace period its place was given up
            assert caught_up_by_conflation
        await slow.aclose()
        nursery.cancel_scope.cancel()
