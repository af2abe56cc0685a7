"""The gob snapshot goes out in key order, as Go Typha's (a B-tree walk by key)."""

from __future__ import annotations

import msgpack

from typha.cache.snapshot import Snapshot
from typha.protocol import SyncStatus
from typha.server.gob_codec import snapshot_updates

POLICY = "/calico/v1/policy/tier/default/policy/p1"
ENDPOINT = "/calico/v1/host/node1/workload/k8s/ns%2fpod/endpoint/eth0"
CONFIG = "/calico/v1/config/LogSeverityScreen"


def _snapshot(keys: list[str]) -> Snapshot:
    kvs = [msgpack.packb([k, {"k": k}], use_bin_type=True) for k in keys]
    return Snapshot(
        seq=1,
        revision=7,
        status=SyncStatus.IN_SYNC,
        n_kvs=len(kvs),
        created=0.0,
        kvs=kvs,
        kv_revisions=[3, 1, 2],
    )


def test_snapshot_updates_are_in_key_order_with_their_own_revisions() -> None:
    # The datastore's order: policies before the endpoints their selector sets hold.
    updates = snapshot_updates(_snapshot([POLICY, ENDPOINT, CONFIG]))
    assert [u.key for u in updates] == [CONFIG, ENDPOINT, POLICY]
    assert [u.revision for u in updates] == ["2", "1", "3"]  # each KV keeps its revision
    # Already sorted input stays as it is (the control: the sort is by key, not reversed).
    assert [u.key for u in snapshot_updates(_snapshot([CONFIG, ENDPOINT, POLICY]))] == [
        CONFIG,
        ENDPOINT,
        POLICY,
    ]
