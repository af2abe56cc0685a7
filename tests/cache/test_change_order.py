"""The view keeps its state and tombstones in change order, so that the keys changed since a
position are found from the newest backwards (``changed_since``, ``count_changed_since``):
checked against a brute-force scan after random puts, rewrites, deletions, re-creations,
resyncs, tombstone expiry and a warm-restart round trip."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from typha.cache.feed import CacheFeed, encode_update
from typha.cache.persist import read_cache_file, restore, snapshot_for_save, write_cache_file
from typha.cache.view import SyncerView
from typha.model.keys import SyncerType
from typha.sync.base import Update

KEYS = [f"/calico/v1/k{i}" for i in range(12)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def brute_force(view: SyncerView, seq: int) -> list[bytes]:
    """What ``changed_since`` means, by a full scan (order-independent)."""
    out = [e.kv_bytes for e in view.state.values() if e.changed_seq > seq]
    out += [kv for (s, _, kv) in view._tombstones.values() if s > seq]
    return sorted(out)


def check(view: SyncerView) -> None:
    seqs = range(view.tombstone_floor, view.head_seq + 1)
    for seq in seqs:
        expected = brute_force(view, seq)
        assert sorted(view.changed_since(seq)) == expected
        for limit in (0, 1, 3, len(expected), len(expected) + 5):
            assert view.count_changed_since(seq, limit) == min(len(expected), limit + 1)
    # Newest position first, one limit: the "too many" memo of a newer position answers for
    # the older ones.
    for limit in (2, 5):
        for seq in reversed(seqs):
            n = len(brute_force(view, seq))
            assert view.count_changed_since(seq, limit) == min(n, limit + 1)


# One step: (key index, value or None, new batch?, seconds passed, resync?)
steps = st.lists(
    st.tuples(
        st.integers(0, len(KEYS) - 1),
        st.one_of(st.none(), st.integers(0, 3)),
        st.booleans(),
        st.sampled_from([0.0, 0.0, 4.0]),
        st.integers(0, 15),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_changed_since_matches_a_full_scan(ops) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    view = SyncerView(
        SyncerType.FELIX, max_batch_size=3, tombstone_retention_secs=10.0, clock=clock
    )
    batch: list = []
    for key, value, flush, dt, resync in ops:
        batch.append(encode_update(Update(KEYS[key], value)))
        if flush:
            clock.now += dt
            view.apply(batch)
            batch = []
            check(view)
        if resync == 0:  # a relist that lists only the even keys
            view.begin_resync()
            view.apply([encode_update(Update(k, 7)) for k in KEYS[::2]])
            view.end_resync()
            check(view)
    view.apply(batch)
    check(view)


def test_change_order_survives_a_warm_restart() -> None:
    """An older cache file lists the state in first-insert order; after loading, the view is
    in change order again (checked by the same comparison)."""
    feed = CacheFeed.create()
    view = feed.views[SyncerType.FELIX]
    for rnd in range(3):
        view.apply([encode_update(Update(k, rnd)) for k in KEYS[rnd * 3 :]])
    view.apply([encode_update(Update(KEYS[0], None)), encode_update(Update(KEYS[4], 9))])
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/cache"
        # Write the state in first-insert order, as the previous layout did.
        view.state = dict(sorted(view.state.items(), key=lambda kv: KEYS.index(kv[0])))
        write_cache_file(path, snapshot_for_save(feed, 1))
        loaded = CacheFeed.create()
        saved = read_cache_file(path)
        assert saved is not None
        restore(loaded, saved)
    restored = loaded.views[SyncerType.FELIX]
    assert len(restored) == len(view) and restored.head_seq == view.head_seq
    check(restored)
    # Positive control: the same file content without the sort would break the walk.
    scrambled = loaded.views[SyncerType.FELIX]
    scrambled.state = dict(sorted(scrambled.state.items(), key=lambda kv: KEYS.index(kv[0])))
    assert sorted(scrambled.changed_since(view.head_seq - 1)) != brute_force(
        scrambled, view.head_seq - 1
    )
