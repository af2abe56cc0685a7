"""Metrics the shared fan-out and the feed feed: ``typha_kvs_per_msg`` counts fast-path writes
too (one observation per client written, as Typha observes each message it sends), and
``observe_many`` agrees with repeated ``observe``."""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry, Summary

from felix_client.sync_client import SyncClient
from tests.typha_harness import run_typha, wait_until, wep
from typha import metrics
from typha.sync.memory import MemoryDatastore


def _samples(summary: Summary) -> dict[str, float]:
    return {s.name: s.value for fam in summary.collect() for s in fam.samples}


def test_observe_many_is_repeated_observe() -> None:
    registry = CollectorRegistry()
    one = Summary("one", "", registry=registry)
    many = Summary("many", "", registry=registry)
    for _ in range(7):
        one.observe(3)
    metrics.observe_many(many, 3, 7)
    metrics.observe_many(many, 5, 0)  # nothing written: nothing observed
    assert _samples(one) == {"one_count": 7, "one_sum": 21}
    assert _samples(many) == {"many_count": 7, "many_sum": 21}


def _kvs_count() -> float:
    return metrics.kvs_per_msg.labels("felix")._count.get()


def _direct() -> float:
    return metrics.fanout_direct_writes.labels("felix")._value.get()


async def test_fast_path_writes_are_observed_in_kvs_per_msg() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        clients = [SyncClient([typha.address], f"n{i}") for i in range(3)]
        for client in clients:
            nursery.start_soon(client.run)
        for client in clients:
            await client.in_sync.wait()
        conns = list(typha.server.connections.values())
        await wait_until(lambda: all(c.write_token.free for c in conns), 5)
        direct, observed = _direct(), _kvs_count()
        ds.set(*wep(1, rev=5))
        await wait_until(lambda: all(c.state == ds.data for c in clients), 5)
        written = _direct() - direct
        assert written == 3  # all three idle clients were written by the fan-out...
        assert _kvs_count() - observed == written  # ...and each write was observed
        nursery.cancel_scope.cancel()
