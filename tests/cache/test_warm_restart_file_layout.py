"""The cache file's layout (format 3): a breadcrumb's KV that is a state entry's current KV is
saved as that entry's index, so the file holds each value once and the restored history shares
its bytes with the state as the running cache did; what the file holds is checked on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from typha.cache import persist
from typha.cache.feed import CacheFeed
from typha.model.keys import SyncerType

from .test_warm_restart_gob import filled_feed


def save(feed: CacheFeed, path: Path) -> dict[str, Any]:
    """Write the file; return it as written (unpacked)."""
    persist.write_cache_file(str(path), persist.snapshot_for_save(feed, epoch=5, clean=True))
    return msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)


def load(saved: dict[str, Any]) -> CacheFeed:
    restored = CacheFeed.create()
    persist.restore(restored, saved)
    return restored


def test_the_history_shares_the_states_bytes_after_a_restart(tmp_path: Path) -> None:
    feed = filled_feed()
    raw = save(feed, tmp_path / "cache")
    before = feed.views[SyncerType.FELIX]
    current = {id(e.kv_bytes) for e in before.state.values()}
    shared = sum(id(kv) in current for c in before.crumbs for kv in c.kv_bytes)
    older = sum(id(kv) not in current for c in before.crumbs for kv in c.kv_bytes)
    assert shared > 0 and older > 0  # both kinds are in the history
    # In the file: the shared ones are indexes, the older values (and deletions) bytes.
    crumb_kvs = [kv for row in raw["views"]["felix"]["crumbs"] for kv in row[4]]
    assert sum(type(kv) is int for kv in crumb_kvs) == shared
    assert sum(type(kv) is bytes for kv in crumb_kvs) == older

    after = load(persist.read_cache_file(str(tmp_path / "cache"))).views[SyncerType.FELIX]
    # (A restored view adds a "resync" status breadcrumb, without KVs.)
    assert [c.kv_bytes for c in after.crumbs][: len(before.crumbs)] == [
        c.kv_bytes for c in before.crumbs
    ]
    restored_current = {id(e.kv_bytes) for e in after.state.values()}
    assert sum(id(kv) in restored_current for c in after.crumbs for kv in c.kv_bytes) == shared


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda v: v["state"][0].__setitem__(4, True), "not a revision"),
        (lambda v: v["state"][0].__setitem__(4, 1.5), "not a revision"),
        (lambda v: v["crumbs"][-1][9].__setitem__(0, 2.5), "per-KV metadata"),
        (lambda v: v["crumbs"][-1][4].__setitem__(0, 10**6), "IndexError"),
        (lambda v: v["crumbs"][-1][4].__setitem__(0, -1), "IndexError"),
    ],
    ids=[
        "bool-revision",
        "float-revision",
        "float-kv-revision",
        "index-out-of-range",
        "negative-index",
    ],
)
def test_a_damaged_file_is_unusable(tmp_path: Path, damage: Any, reason: str) -> None:
    raw = save(filled_feed(), tmp_path / "cache")
    assert load(raw).views[SyncerType.FELIX].state  # control: as written, it loads
    raw = save(filled_feed(), tmp_path / "cache")
    view = raw["views"]["felix"]
    assert view["crumbs"][-1][9] and view["crumbs"][-1][4]
    damage(view)
    with pytest.raises(persist.CacheFileError, match=reason):
        load(raw)
