"""GrpcEtcdClient (EtcdAPI=grpc) against a real etcd: the gateway client's own behaviour tests
(tests/sync/test_etcd_client.py), re-run with the gRPC client in its place, plus what only this
transport has (requests larger than HTTP/2's first flow-control window, a slow consumer).

The borrowed tests build their clients through the module global ``EtcdClient``; a fixture
swaps that for :class:`GrpcEtcdClient` and checks afterwards that gRPC clients were really the
ones used. Their independent reads go through the test harness (etcdctl), not either client.
The TLS and auth tests are borrowed in tests/sync/test_etcd_grpc_tls_auth.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

import tests.sync.test_etcd_client as base
from tests.peers.etcd import EtcdServer
from typha.sync.etcd_client import EtcdClient, PutOp, WatchEnded, prefix_range_end
from typha.sync.etcd_grpc import GrpcEtcdClient, GrpcWatchStream

PREFIX = base.PREFIX
_made: list[GrpcEtcdClient] = []


class _CountedGrpcClient(GrpcEtcdClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _made.append(self)


@pytest.fixture(autouse=True)
def grpc_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _made.clear()
    monkeypatch.setattr(base, "EtcdClient", _CountedGrpcClient)
    yield
    assert _made, "the borrowed test made no gRPC client"


# The gateway client's behaviour tests, run here with GrpcEtcdClient.
test_put_range_delete = base.test_put_range_delete
test_range_paginated_pins_the_first_page_revision = (
    base.test_range_paginated_pins_the_first_page_revision
)
test_txn_applies_128_ops_in_one_revision = base.test_txn_applies_128_ops_in_one_revision
test_compact_makes_old_revisions_unreadable = base.test_compact_makes_old_revisions_unreadable
test_watch_yields_put_and_delete = base.test_watch_yields_put_and_delete
test_watch_progress_notifications = base.test_watch_progress_notifications
test_watch_from_compacted_revision_raises = base.test_watch_from_compacted_revision_raises
test_watch_stream_end_raises_watch_ended = base.test_watch_stream_end_raises_watch_ended
test_watch_idle_timeout = base.test_watch_idle_timeout
test_watch_replays_20k_events_in_one_huge_message = (
    base.test_watch_replays_20k_events_in_one_huge_message
)
test_failover_to_next_endpoint = base.test_failover_to_next_endpoint
test_request_timeout_is_enforced = base.test_request_timeout_is_enforced


async def test_requests_larger_than_the_first_window_and_status(etcd_server: EtcdServer) -> None:
    """A 1.2 MB txn needs WINDOW_UPDATEs from etcd while it is sent (etcd grants 64 KiB at
    first); the written values read back through the gateway client are the same."""
    big = bytes(range(256)) * 600  # 150 kB, binary
    async with base.EtcdClient([etcd_server.client_url]) as c:
        assert isinstance(c, GrpcEtcdClient)
        rev = await c.txn(PutOp(f"{PREFIX}big{i}", big) for i in range(8))
        status = await c.status()
        assert int(status["header"]["revision"]) >= rev and status["version"].startswith("3.")
        assert await c.create(PREFIX + "once", b"1") is True
        assert await c.create(PREFIX + "once", b"2") is False  # never overwrites
    async with EtcdClient([etcd_server.client_url]) as gateway:
        kvs = (await gateway.range(PREFIX, prefix_range_end(PREFIX))).kvs
    assert {kv.key: kv.value for kv in kvs} == {
        **{f"{PREFIX}big{i}": big for i in range(8)},
        PREFIX + "once": b"1",
    }
    assert {kv.mod_revision for kv in kvs if "big" in kv.key} == {rev}


async def test_an_unread_watch_does_not_hold_up_other_calls(etcd_server: EtcdServer) -> None:
    """Each watch has its own connection: while one sits unread with megabytes pending,
    ranges and puts on the client still answer at once; the watch then delivers everything."""
    value = b"v" * 100_000
    async with base.EtcdClient([etcd_server.client_url]) as c:
        start = await c.revision() + 1
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start) as stream:
            assert isinstance(stream, GrpcWatchStream)
            for i in range(60):  # ~6 MB that nobody reads yet
                await c.put(f"{PREFIX}{i:02d}", value)
            with trio.fail_after(5):
                assert (await c.range(PREFIX + "00")).kvs[0].value == value
            got = await base.collect_events(stream, 60)
        assert [e.kv.key for e in got] == [f"{PREFIX}{i:02d}" for i in range(60)]
        # Leaving the block closed the watch's connection.
        with pytest.raises(WatchEnded):
            await stream.__anext__()
