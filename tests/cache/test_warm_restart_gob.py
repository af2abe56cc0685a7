"""Warm restart keeps the per-KV metadata Calico's protocol sends: after a save and a load, every
key's revision (and so its V3ResourceVersion) and every breadcrumb's update types and revisions
are what they were, so the gob bytes of the snapshot and of every breadcrumb are the same.
A version-1 file (which had none of it) is refused as outdated and Typha starts cold.

tests/calico/test_warm_restart_calico.py checks the same through Calico's own client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import wait_until, wep
from typha import metrics
from typha.app import Typha
from typha.cache import persist
from typha.cache.feed import CacheFeed
from typha.model.keys import SyncerType, workload_endpoint_key
from typha.protocol.gob import UpdateType
from typha.server.gob_codec import GobCodec, serialized_update
from typha.sync.base import ResyncFinished, ResyncStarted, Update, Updates
from typha.sync.memory import MemoryDatastore

from ..peers.ports import free_ports
from .test_warm_restart import config, run_until_synced

V3_NODE = "/calico/resources/v3/projectcalico.org/nodes/"


def endpoint(i: int, label: str) -> tuple[str, dict[str, Any]]:
    key = workload_endpoint_key("node1", "k8s", f"ns/pod{i}", "eth0")
    return key, {"name": f"cali{i:011d}", "labels": {"app": label}, "profile_ids": ["kns.ns"]}


def node(name: str, asn: str) -> tuple[str, dict[str, Any]]:
    value = {"kind": "Node", "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}}
    return V3_NODE + name, value | {"spec": {"bgp": {"asNumber": asn}}}


def filled_feed() -> CacheFeed:
    """A feed with Kubernetes-like revisions (plain and compound), news, updates, deletions."""
    feed = CacheFeed.create()
    feed.apply(ResyncStarted())
    listed = [Update(*endpoint(i, "a"), revision=str(100 + i)) for i in range(5)]
    listed += [Update(*node("n1", "64512"), revision="200"), Update(*node("n2", "1"), "201")]
    listed.append(Update("/calico/v1/policy/profile/ksa.ns.sa/rules", {}, revision="7/9"))
    feed.apply(Updates(listed))
    feed.apply(ResyncFinished(None))
    feed.apply(
        Updates(
            [
                Update(*endpoint(1, "b"), revision="300"),  # updated
                Update(endpoint(2, "a")[0], None, revision="301"),  # deleted
                Update(*endpoint(9, "a"), revision="302"),  # new
                Update(*node("n2", "2"), revision="303"),  # updated v3 resource
            ]
        )
    )
    return feed


def gob_view(feed: CacheFeed, syncer: SyncerType, v3: bool) -> tuple[list[Any], list[bytes]]:
    """What a gob client gets: the snapshot's SerializedUpdates and each breadcrumb's bytes."""
    view = feed.views[syncer]
    kvs, revs = view.all_kvs_with_revisions()
    snapshot = [
        serialized_update(kv, revs[i] if revs else None, UpdateType.NEW, v3)
        for i, kv in enumerate(kvs)
    ]
    codec = GobCodec(snappy=False, max_kvs_per_message=100, v3_resource_versions=v3)
    return snapshot, [codec.crumb_bytes(c) for c in view.crumbs]


def round_trip(feed: CacheFeed, path: Path) -> CacheFeed:
    persist.write_cache_file(str(path), persist.snapshot_for_save(feed, epoch=5, clean=True))
    saved = persist.read_cache_file(str(path))
    assert saved is not None
    restored = CacheFeed.create()
    persist.restore(restored, saved)
    return restored


@pytest.mark.parametrize("v3", [True, False], ids=["kubernetes", "etcd"])
def test_a_warm_restart_keeps_revisions_and_update_types_for_gob_clients(
    tmp_path: Path, v3: bool
) -> None:
    feed = filled_feed()
    restored = round_trip(feed, tmp_path / "cache.msgpack")
    for syncer in (SyncerType.FELIX, SyncerType.BGP):
        before_snapshot, before_crumbs = gob_view(feed, syncer, v3)
        after_snapshot, after_crumbs = gob_view(restored, syncer, v3)
        assert after_snapshot == before_snapshot
        # The restored history, then the "resync" status a restored view says until the
        # datastore confirms it is caught up.
        assert after_crumbs[: len(before_crumbs)] == before_crumbs
        assert len(after_crumbs) == len(before_crumbs) + 1
    # The comparison has something to compare: revisions, V3ResourceVersions (Kubernetes) and
    # all three update types are in what the felix clients get.
    snapshot, _ = gob_view(restored, SyncerType.FELIX, v3)
    assert all(u.revision for u in snapshot), snapshot
    assert {u.revision for u in snapshot} >= {"100", "300", "302", "303", "7/9"}
    v3_versions = {u.key: u.v3_resource_version for u in snapshot if u.key.startswith(V3_NODE)}
    if v3:
        assert v3_versions == {V3_NODE + "n1": "200", V3_NODE + "n2": "303"}
    else:  # etcd's v3 objects carry no resourceVersion
        assert v3_versions == {V3_NODE + "n1": "", V3_NODE + "n2": ""}
    crumb = next(c for c in restored.views[SyncerType.FELIX].crumbs if c.n_kvs == 4)
    assert sorted(crumb.kv_types) == [UpdateType.NEW, UpdateType.UPDATED, UpdateType.UPDATED, 3]
    assert crumb.kv_revisions == [300, 301, 302, 303]


def test_the_gob_comparison_sees_a_lost_revision(tmp_path: Path) -> None:
    """Negative control: a restored feed that lost one key's revision (as version-1 files did
    for all of them) is told apart."""
    feed = filled_feed()
    restored = round_trip(feed, tmp_path / "cache.msgpack")
    key = endpoint(0, "a")[0]
    restored.views[SyncerType.FELIX].state[key].revision = None
    assert gob_view(restored, SyncerType.FELIX, False) != gob_view(feed, SyncerType.FELIX, False)


def version_1_file(feed: CacheFeed) -> bytes:
    """The file the previous format wrote: no revisions in the state, no per-KV metadata in
    the breadcrumbs."""
    snap = persist.snapshot_for_save(feed, epoch=5, clean=True)
    snap["version"] = 1
    for view in snap["views"].values():
        view["state"] = [row[:4] for row in view["state"]]
        view["crumbs"] = [row[:8] for row in view["crumbs"]]
    return msgpack.packb(snap, use_bin_type=True)


async def test_a_version_1_cache_file_is_outdated_and_typha_starts_cold(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    path.write_bytes(version_1_file(filled_feed()))
    with pytest.raises(persist.CacheFileOutdated, match="version 1, older than"):
        persist.read_cache_file(str(path))
    outdated = metrics.warm_restart_loads.labels("outdated")._value.get()
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    typha = Typha(config(port, path), ds)
    assert typha.start_revision is None and typha.feed.views[SyncerType.FELIX].state == {}
    assert metrics.warm_restart_loads.labels("outdated")._value.get() == outdated + 1
    async with trio.open_nursery() as nursery:
        await run_until_synced(typha, nursery)
        client = SyncClient([f"127.0.0.1:{port}"], "n")
        nursery.start_soon(client.run)
        await wait_until(lambda: client.state == ds.data)  # it serves, from a full list
        nursery.cancel_scope.cancel()
    # Positive control: the same feed saved in the current format loads.
    persist.write_cache_file(str(path), persist.snapshot_for_save(filled_feed(), epoch=5))
    assert persist.read_cache_file(str(path)) is not None
