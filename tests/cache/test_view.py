"""Pure cache bookkeeping: dedupe, breadcrumbs, resync deletions, tombstones, resume points."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from typha.cache.feed import encode_update
from typha.cache.view import SyncerView
from typha.model.keys import SyncerType
from typha.protocol import SyncStatus, decode_payload
from typha.protocol.framing import FrameDecoder
from typha.sync.base import Update


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def view(**kw) -> SyncerView:
    return SyncerView(SyncerType.FELIX, **kw)


def enc(key: str, value) -> object:
    return encode_update(Update(key, value))


def replay(frames: bytes) -> dict:
    dec = FrameDecoder(1 << 24)
    dec.feed(frames)
    state: dict = {}
    while (p := dec.next_payload()) is not None:
        msg = decode_payload(p)
        for k, v in getattr(msg, "kvs", ()):
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
    return state


def loaded(v: SyncerView, data: dict, revision: int = 1) -> None:
    v.begin_resync()
    v.apply([enc(k, val) for k, val in data.items()], revision)
    v.end_resync(revision)


def test_unchanged_values_are_dropped_and_counted() -> None:
    v = view()
    loaded(v, {"/a": 1, "/b": 2})
    head = v.head_seq
    assert v.apply([enc("/a", 1)], 2) == []
    assert v.stats.updates_skipped == 1
    assert v.head_seq == head
    # Positive control: a changed value mints a breadcrumb.
    crumbs = v.apply([enc("/a", 3)], 3)
    assert len(crumbs) == 1 and v.head_seq == head + 1


def test_put_then_delete_in_one_batch_is_not_skipped() -> None:
    v = view()
    loaded(v, {})
    crumbs = v.apply([enc("/k", 1), enc("/k", None)], 2)
    assert [msgpack.unpackb(kv) for c in crumbs for kv in c.kv_bytes] == [["/k", 1], ["/k", None]]
    assert "/k" not in v.state


def test_resync_deletes_only_what_was_not_listed() -> None:
    v = view()
    loaded(v, {"/a": 1, "/b": 2, "/c": 3})
    before = replay(b"".join(c.frames for c in v.crumbs))
    assert before == {"/a": 1, "/b": 2, "/c": 3}
    crumbs = v.begin_resync()
    crumbs += v.apply([enc("/a", 1), enc("/c", 4)], 10)
    crumbs += v.end_resync(10)
    sent = [msgpack.unpackb(kv) for c in crumbs for kv in c.kv_bytes]
    assert sent == [["/c", 4], ["/b", None]]  # only real changes; /a unchanged
    assert v.status is SyncStatus.IN_SYNC
    assert crumbs[-1].status is SyncStatus.IN_SYNC


def test_in_sync_is_sent_after_the_batch() -> None:
    v = view(max_batch_size=2)
    v.begin_resync()
    v.apply([enc(f"/k{i}", i) for i in range(5)], 1)
    crumbs = v.end_resync(1)
    assert crumbs[-1].status is SyncStatus.IN_SYNC


def test_catch_up_gives_latest_values_and_deletions_since_a_position() -> None:
    clock = Clock()
    v = view(max_history_updates=3, clock=clock)
    loaded(v, {f"/k{i}": 0 for i in range(10)})
    pos = v.head_seq
    client = {f"/k{i}": 0 for i in range(10)}
    for r in range(5):
        clock.now += 1
        v.apply([enc("/k1", r), enc("/k2", r)], 2 + r)
    v.apply([enc("/k3", None)], 20)
    assert not v.can_resume_from_seq(pos)  # history moved on
    assert v.can_catch_up_from_seq(pos)
    for kv in v.changed_since(pos):
        k, val = msgpack.unpackb(kv)
        if val is None:
            client.pop(k, None)
        else:
            client[k] = val
    assert client == {k: msgpack.unpackb(e.value_bytes) for k, e in v.state.items()}


def test_tombstones_expire_and_then_catch_up_is_refused() -> None:
    clock = Clock()
    v = view(tombstone_retention_secs=10, clock=clock)
    loaded(v, {"/a": 1, "/b": 1})
    pos = v.head_seq
    v.apply([enc("/a", None)], 2)
    assert v.can_catch_up_from_seq(pos)
    assert v.tombstone_count == 1
    clock.now = 100
    v.apply([enc("/b", 2)], 3)  # trimming runs on updates
    assert not v.can_catch_up_from_seq(pos)
    assert v.can_catch_up_from_seq(v.head_seq - 1)
    assert v.tombstone_count == 0  # what the typha_cache_tombstones gauge reports
    v.apply([enc("/b", None)], 4)
    assert v.tombstone_count == 1
    v.apply([enc("/b", 3)], 5)  # re-created: no longer a tombstone
    assert v.tombstone_count == 0


def test_seq_for_revision_never_skips_part_of_a_batch() -> None:
    v = view(max_batch_size=2)
    loaded(v, {"/x": 0}, revision=1)
    v.apply([enc("/a", 1), enc("/b", 1), enc("/c", 1)], 5)  # one batch, two crumbs
    first, second = list(v.crumbs)[-2:]
    assert not first.complete and second.complete
    # A client that saw only the first crumb claims the previous complete revision.
    assert first.revision == 1
    seq = v.seq_for_revision(1)
    assert seq is not None
    replayed = [msgpack.unpackb(kv)[0] for c in v.crumbs_after(seq) for kv in c.kv_bytes]
    assert replayed == ["/a", "/b", "/c"]
    assert v.seq_for_revision(5) == v.head_seq
    assert v.seq_for_revision(0) is None  # before the first complete list
    assert v.seq_for_revision(6) is None  # ahead of this replica


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 8), st.none() | st.integers(0, 3)), max_size=6),
        max_size=25,
    ),
    st.integers(1, 4),
    st.integers(2, 30),
)
def test_any_resume_point_replays_to_the_head(batches, batch_size, history) -> None:
    """From every position a client can hold, replay or catch-up reproduces the head state."""
    clock = Clock()
    v = view(max_batch_size=batch_size, max_history_updates=history, clock=clock)
    loaded(v, {})
    states = {v.head_seq: {}}
    revs = {v.head_seq: 1}
    model: dict = {}
    for i, batch in enumerate(batches):
        clock.now += 1
        crumbs = v.apply([enc(f"/k{k}", val) for k, val in batch], 2 + i)
        for crumb in crumbs:
            for kv in crumb.kv_bytes:
                k, val = msgpack.unpackb(kv)
                if val is None:
                    model.pop(k, None)
                else:
                    model[k] = val
            states[crumb.seq] = dict(model)
            revs[crumb.seq] = crumb.revision
    head = {k: msgpack.unpackb(e.value_bytes) for k, e in v.state.items()}
    assert head == model
    for seq, state in states.items():
        if v.can_resume_from_seq(seq):
            got = applied(state, (kv for c in v.crumbs_after(seq) for kv in c.kv_bytes))
            assert got == head
        if v.can_catch_up_from_seq(seq):
            assert applied(state, v.changed_since(seq)) == head
        rev = revs[seq]
        if rev is not None and (rseq := v.seq_for_revision(rev)) is not None:
            got = applied(state, (kv for c in v.crumbs_after(rseq) for kv in c.kv_bytes))
            assert got == head, (seq, rev, rseq)


def applied(state: dict, kv_bytes) -> dict:  # type: ignore[no-untyped-def]
    """``state`` after applying encoded KVs in order (value None deletes)."""
    out = dict(state)
    for kv in kv_bytes:
        k, val = msgpack.unpackb(kv)
        if val is None:
            out.pop(k, None)
        else:
            out[k] = val
    return out


def test_scoped_resync_deletes_only_that_scopes_missing_keys() -> None:
    from typha.cache.feed import CacheFeed
    from typha.model.keys import profile_labels_key, workload_endpoint_key
    from typha.sync.base import ResyncFinished, ResyncStarted, Updates

    feed = CacheFeed.create()
    pod_a = workload_endpoint_key("n", "k8s", "ns/a", "eth0")
    pod_b = workload_endpoint_key("n", "k8s", "ns/b", "eth0")
    prof = profile_labels_key("kns.ns")
    feed.apply(ResyncStarted())
    feed.apply(Updates([Update(pod_a, {"x": 1}), Update(pod_b, {"x": 1})], None, "pods"))
    feed.apply(Updates([Update(prof, {"l": "v"})], None, "namespaces"))
    feed.apply(ResyncFinished())
    view = feed.views[SyncerType.FELIX]
    assert set(view.state) == {pod_a, pod_b, prof}
    status_crumbs = sum(1 for c in view.crumbs if c.status is not None)
    # Relist pods only: pod_b vanished; the namespace profile is not pods' to delete.
    feed.apply(ResyncStarted("410", scope="pods"))
    feed.apply(Updates([Update(pod_a, {"x": 1})], None, "pods"))
    feed.apply(ResyncFinished(scope="pods"))
    assert set(view.state) == {pod_a, prof}
    assert view.status is SyncStatus.IN_SYNC
    assert sum(1 for c in view.crumbs if c.status is not None) == status_crumbs


def test_feed_turns_an_unencodable_value_into_a_deletion_of_that_key_only() -> None:
    """msgpack cannot carry an integer past 64 bits; such a value (which the converters refuse,
    but a datastore could still hand over) must not stop the batch it came in."""
    from prometheus_client import REGISTRY

    from typha.cache.feed import CacheFeed
    from typha.sync.base import Update, Updates

    def invalid_count() -> float:
        return REGISTRY.get_sample_value("typha_datastore_invalid_values_total") or 0.0

    feed = CacheFeed.create()
    good, bad = "/calico/v1/config/Good", "/calico/v1/config/Bad"
    feed.apply(Updates([Update(bad, "was fine"), Update(good, "1")], revision=1))
    before = invalid_count()
    feed.apply(Updates([Update(bad, {"n": 2**70}), Update(good, "2")], revision=2))
    view = next(iter(feed.views.values()))
    assert bad not in view.state  # the earlier value is gone, as for any invalid value
    assert msgpack.unpackb(view.state[good].value_bytes) == "2"  # the rest of the batch applied
    assert invalid_count() == before + 1


def test_update_types_and_revisions_ride_with_each_kv_and_do_not_defeat_dedupe() -> None:
    """New / updated / deleted per KV (within one batch too), revisions stored with the key;
    an update that changes only the revision is skipped and the key keeps its revision (as
    Go Typha's no-op check), while a changed value takes the new one."""
    v = view()

    def upd(key: str, value, rev: str) -> object:
        return encode_update(Update(key, value, rev))

    [c1] = v.apply([upd("/a", 1, "5"), upd("/b", 1, "5"), upd("/b", 2, "5")], 5)
    assert c1.kv_types == bytes([1, 1, 2]) and c1.kv_revisions == [5, 5, 5]
    assert v.apply([upd("/a", 1, "6")], 6) == []  # same value: skipped
    assert v.all_kvs_with_revisions()[1] == [5, 5]
    [c2] = v.apply([upd("/a", 2, "7"), upd("/b", None, "7"), upd("/b", 3, "7")], 7)
    assert c2.kv_types == bytes([2, 3, 1]) and c2.kv_revisions == [7, 7, 7]
    _, revs = v.all_kvs_with_revisions()
    assert revs == [7, 7]
    # Revisions that are not plain decimals are kept as strings; none at all stay None.
    [c3] = v.apply([upd("/c", 1, "0012"), enc("/d", 1)])
    assert c3.kv_revisions == ["0012", None]
    [c4] = v.apply([enc("/e", 1)])
    assert c4.kv_revisions is None and c4.kv_types == bytes([1])
