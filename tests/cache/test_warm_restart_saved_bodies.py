"""A clean shutdown saves each KV's gob snapshot body with the cache file (format 3), and the
first gob snapshots after the warm restart join those bodies instead of encoding every value
again. What a Calico client receives must not change: the same bytes as from a cold start.

The comparisons are shown able to fail: a body tampered with in the file reaches the snapshot
(and Calico's client), which proves the saved bodies are what is sent. A file of the previous
format (2, without bodies) is refused as outdated, Typha starts cold and its next clean save
writes the current format, which loads."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.server.gobclient import GoClient, require_gobcheck
from tests.typha_harness import wait_until, wep
from typha import app, metrics
from typha.app import Typha
from typha.cache import persist
from typha.cache.feed import CacheFeed
from typha.cache.snapshot import Snapshot, encode_snapshot
from typha.cache.view import SyncerView
from typha.model.keys import SyncerType
from typha.server.gob_codec import _snapshot_plain, snapshot_body, snapshot_body_variant
from typha.sync.base import Update, Updates
from typha.sync.memory import MemoryDatastore

from ..peers.ports import free_ports
from .test_warm_restart import config, run_until_synced
from .test_warm_restart_gob import endpoint, filled_feed, node


def packed_kv(key: str, value: Any) -> bytes:
    """A view KV's bytes (``[key, value]`` in msgpack)."""
    return msgpack.packb([key, value], use_bin_type=True)


def gob_encoder(v3: bool) -> persist.BodyEncoder:
    return snapshot_body_variant(v3), functools.partial(snapshot_body, v3_resource_versions=v3)


def save_and_load(
    feed: CacheFeed, path: Path, bodies_v3: bool, tamper: str | None = None
) -> CacheFeed:
    """A clean save with the gob bodies (``tamper``: that key's body replaced by another
    value's), read back into a new feed."""
    snap = persist.snapshot_for_save(feed, epoch=5, clean=True)
    persist.add_saved_bodies(snap, gob_encoder(bodies_v3))
    if tamper is not None:
        for view in snap["views"].values():
            for i, row in enumerate(view["state"]):
                if row[0] == tamper:
                    view["bodies"][i] = snapshot_body(packed_kv(tamper, {"tampered": 1}), row[4])
    persist.write_cache_file(str(path), snap)
    saved = persist.read_cache_file(str(path))
    assert saved is not None and saved["version"] == persist.FORMAT_VERSION == 3
    restored = CacheFeed.create()
    persist.restore(restored, saved)
    return restored


def gob_snapshot(view: SyncerView, v3: bool, *, use_saved: bool = True) -> bytes:
    """The gob snapshot a joining Calico client gets (as ``GobCodec.snapshot_bytes`` builds
    it from the view's ``SnapshotCache``)."""
    kvs, revs = view.all_kvs_with_revisions()
    snap: Snapshot = encode_snapshot(view.head_seq, view.revision, view.status, kvs, 0.0)
    snap.kv_revisions = revs
    snap.saved_bodies = view.saved_bodies if use_saved else None
    return _snapshot_plain(snap, v3)


@pytest.mark.parametrize("v3", [True, False], ids=["kubernetes", "etcd"])
def test_the_snapshot_from_saved_bodies_is_the_cold_one_byte_for_byte(
    tmp_path: Path, v3: bool
) -> None:
    feed = filled_feed()
    restored = save_and_load(feed, tmp_path / "cache", bodies_v3=v3)
    for syncer in (SyncerType.FELIX, SyncerType.BGP):
        view = restored.views[syncer]
        assert view.saved_bodies is not None
        assert view.saved_bodies.variant == snapshot_body_variant(v3)
        assert len(view.saved_bodies) == len(view.state) > 0
        # Restored views say "resync" until the datastore confirms: compare in the same status.
        cold = feed.views[syncer]
        cold.status = view.status
        assert gob_snapshot(view, v3) == gob_snapshot(cold, v3)
        assert gob_snapshot(view, v3) == gob_snapshot(view, v3, use_saved=False)


def test_a_tampered_saved_body_is_what_the_snapshot_sends(tmp_path: Path) -> None:
    """Positive control for the comparison above: the saved bodies are used, not re-encoded."""
    feed = filled_feed()
    key = endpoint(0, "a")[0]
    restored = save_and_load(feed, tmp_path / "cache", bodies_v3=False, tamper=key)
    view = restored.views[SyncerType.FELIX]
    sent = gob_snapshot(view, False)
    assert b'{"tampered":1}' in sent
    assert sent != gob_snapshot(view, False, use_saved=False)
    assert b'{"tampered":1}' not in gob_snapshot(view, False, use_saved=False)


def test_keys_changed_after_the_restart_are_encoded_again(tmp_path: Path) -> None:
    feed = filled_feed()
    restored = save_and_load(feed, tmp_path / "cache", bodies_v3=False)
    changes = [
        Update(*endpoint(0, "changed"), revision="400"),  # a restored key with a new value
        Update(endpoint(3, "a")[0], None, revision="401"),  # deleted
        Update(*endpoint(20, "a"), revision="402"),  # new
    ]
    for f in (feed, restored):
        f.apply(Updates(changes))
    view, cold = restored.views[SyncerType.FELIX], feed.views[SyncerType.FELIX]
    cold.status = view.status
    assert view.saved_bodies is not None
    still_saved = sum(
        view.saved_bodies.get(e.kv_bytes, e.revision) is not None for e in view.state.values()
    )
    assert still_saved == len(view.state) - 2  # the changed and the new key miss
    assert b'"changed"' in gob_snapshot(view, False)
    assert gob_snapshot(view, False) == gob_snapshot(cold, False)


def test_bodies_saved_for_another_variant_are_not_used(tmp_path: Path) -> None:
    """Saved by an etcd Typha, served by a Kubernetes one (V3ResourceVersions differ)."""
    feed = filled_feed()
    restored = save_and_load(feed, tmp_path / "cache", bodies_v3=False)
    view, cold = restored.views[SyncerType.BGP], feed.views[SyncerType.BGP]
    cold.status = view.status
    assert node("n1", "64512")[0] in view.state
    assert gob_snapshot(view, True) == gob_snapshot(cold, True)
    # The check matters: the etcd bodies would have been wrong here.
    assert gob_snapshot(view, False) != gob_snapshot(cold, True)


def test_periodic_saves_carry_no_bodies_and_still_load(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    persist.write_cache_file(str(path), persist.snapshot_for_save(filled_feed(), epoch=5))
    saved = persist.read_cache_file(str(path))
    assert saved is not None
    restored = CacheFeed.create()
    persist.restore(restored, saved)
    assert restored.views[SyncerType.FELIX].saved_bodies is None
    assert len(restored.views[SyncerType.FELIX].state) > 0


def test_saved_bodies_that_do_not_match_the_state_make_the_file_unusable(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    snap = persist.snapshot_for_save(filled_feed(), epoch=5, clean=True)
    persist.add_saved_bodies(snap, gob_encoder(False))
    snap["views"]["felix"]["bodies"].pop()
    persist.write_cache_file(str(path), snap)
    saved = persist.read_cache_file(str(path))
    assert saved is not None
    with pytest.raises(persist.CacheFileError, match="saved bodies do not match"):
        persist.restore(CacheFeed.create(), saved)


def version_2_file(feed: CacheFeed) -> bytes:
    """The file the previous format wrote: no saved bodies."""
    snap = persist.snapshot_for_save(feed, epoch=5, clean=True)
    snap["version"] = 2
    for view in snap["views"].values():
        del view["body_variant"], view["bodies"]
    return msgpack.packb(snap, use_bin_type=True)


async def test_a_version_2_file_is_refused_and_the_next_clean_save_writes_version_3(
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    path.write_bytes(version_2_file(filled_feed()))
    with pytest.raises(persist.CacheFileOutdated, match="version 2, older than"):
        persist.read_cache_file(str(path))
    outdated = metrics.warm_restart_loads.labels("outdated")._value.get()
    ds = MemoryDatastore(dict(wep(i) for i in range(30)))
    typha = Typha(config(port, path), ds)
    assert typha.start_revision is None and typha.feed.views[SyncerType.FELIX].state == {}
    assert metrics.warm_restart_loads.labels("outdated")._value.get() == outdated + 1
    async with trio.open_nursery() as nursery:
        await run_until_synced(typha, nursery)
        client = SyncClient([f"127.0.0.1:{port}"], "n")
        nursery.start_soon(client.run)
        await wait_until(lambda: client.state == ds.data)  # it serves, from a full list
        await typha.drain_and_stop()
        nursery.cancel_scope.cancel()
    # The clean save rewrote the file in the current format, with the bodies; it loads.
    saved = persist.read_cache_file(str(path))
    assert saved is not None and saved["version"] == 3 and saved["clean"]
    assert saved["views"]["felix"]["body_variant"] == snapshot_body_variant(False)
    again = Typha(config(port, path), ds)
    assert again.start_revision is not None
    view = again.feed.views[SyncerType.FELIX]
    assert view.saved_bodies is not None and len(view.saved_bodies) == len(view.state) == 30


def gob_values(client: GoClient) -> dict[str, tuple[Any, ...]]:
    return {
        k: (u["value"], u["revision"], u.get("v3ResourceVersion"), u["updateType"])
        for k, u in client.state().items()
    }


async def serve_one_gob_client(typha: Typha, port: int) -> dict[str, tuple[Any, ...]]:
    """Calico's client (gobcheck) joins, gets in sync; its view of every KV."""
    async with trio.open_nursery() as nursery:
        await run_until_synced(typha, nursery)
        client = GoClient(f"127.0.0.1:{port}", "felix")
        try:
            await client.wait_for(
                lambda: client.in_sync and len(client.state()) == 40, "in sync", 60
            )
            return gob_values(client)
        finally:
            client.close()
            await typha.drain_and_stop()  # the clean save (with the bodies)
            nursery.cancel_scope.cancel()


async def test_calicos_client_gets_the_same_values_after_a_warm_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_gobcheck()
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    ds = MemoryDatastore(dict(wep(i) for i in range(40)))
    cold = await serve_one_gob_client(Typha(config(port, path), ds), port)
    assert len(cold) == 40 and all(rev for _v, rev, _v3, _t in cold.values())

    warm_typha = Typha(config(port, path), ds)
    assert warm_typha.start_revision is not None
    view = warm_typha.feed.views[SyncerType.FELIX]
    assert view.saved_bodies is not None and len(view.saved_bodies) == 40
    warm = await serve_one_gob_client(warm_typha, port)
    assert warm == cold

    # Positive control: a body changed in the file reaches Calico's client, so the values
    # above came from the saved bodies.
    key = wep(7)[0]
    saved = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    rows = saved["views"]["felix"]["state"]
    i = next(i for i, row in enumerate(rows) if row[0] == key)
    saved["views"]["felix"]["bodies"][i] = snapshot_body(
        packed_kv(key, {"name": "tampered"}), rows[i][4]
    )
    path.write_bytes(msgpack.packb(saved, use_bin_type=True))
    tampered = await serve_one_gob_client(Typha(config(port, path), ds), port)
    # (Calico's client parses the value into its WorkloadEndpoint and prints that back.)
    assert json.loads(tampered[key][0])["name"] == "tampered"
    assert json.loads(cold[key][0])["name"] == wep(7)[1]["name"]
    assert {k: v for k, v in tampered.items() if k != key} == {
        k: v for k, v in cold.items() if k != key
    }

    # The bodies are let go a while after the start (then snapshots are encoded as after a
    # cold start).
    monkeypatch.setattr(app, "SAVED_BODIES_KEEP_SECS", 0.2)
    later = Typha(config(port, path), ds)
    assert later.feed.views[SyncerType.FELIX].saved_bodies is not None
    async with trio.open_nursery() as nursery:
        await run_until_synced(later, nursery)
        await wait_until(lambda: later.feed.views[SyncerType.FELIX].saved_bodies is None, 5)
        nursery.cancel_scope.cancel()
