"""One syncer type's view of the cluster: current state, breadcrumb history and tombstones.

Pure bookkeeping: no I/O and no trio. The feed (``typha.cache.feed``) drives it and the server
reads from it.

* Every update enters already encoded (``EncodedUpdate``: the value packed once and the whole
  KV packed once); the same bytes are shared by every view and every connection.
* ``apply`` drops updates whose value bytes did not change (counted in ``skipped``), applies the
  rest to the state and mints breadcrumbs of at most ``max_batch_size`` updates. Each breadcrumb
  carries its sequence number, the datastore revision it reached and its delta frame, encoded
  once.
* History is bounded by age (``max_history_secs``) and size (``max_history_updates``). A
  ``HistoryHold`` keeps the breadcrumbs after a position from ageing out (never from the size
  bound) until its deadline: a client that has just received a snapshot gets a grace period
  to catch up (``ServerNewClientFallBehindGracePeriod``, as in Calico Typha).
* Each state entry remembers the sequence number that last changed it, and deletions leave
  tombstones (kept for ``tombstone_retention_secs``), so a client that fell out of the history
  can be brought up to date with the latest value of every key changed since its position,
  without any per-client copy (conflated catch-up).
* The state and the tombstones are kept in change order (a changed key moves to the end), so
  the keys changed since a position are found from the newest backwards, in time proportional
  to their number, and "more than N keys changed" is answered after N steps (a hostile resume
  from an old position must not cost a walk over the whole state: docs/protocol.md, §5).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from typha.model.keys import SyncerType
from typha.protocol import (
    KVKind,
    SyncStatus,
    SyncStatusMsg,
    best_frame,
    encode_kvs_payload,
    encode_payload,
    frame,
)
from typha.protocol.codec import PACKED_NIL, encode_kv

# A KV's datastore revision as stored (docs/architecture.md, "Per-KV metadata"): etcd's
# mod_revision or a Kubernetes resourceVersion, kept as an int when the string is a plain
# decimal (28 bytes instead of ~55), else as the string; None when the datastore gave none.
# It is not part of the dedupe: an update that changes only the revision is skipped and the
# key keeps its old one, as in Go Typha. (The v3 resource version Calico's protocol also
# sends is the same revision for v3 resource keys: derived when encoding, not stored.)
Revision = int | str | None

_T = TypeVar("_T")


def compact_revision(rev: str | None) -> Revision:
    if rev is None:
        return None
    if rev.isdigit() and (rev == "0" or rev[0] != "0") and len(rev) < 19:
        return int(rev)
    return rev


def revision_text(rev: Revision) -> str | None:
    return None if rev is None else str(rev)


# Calico's update types (libcalico-go api.UpdateType).
UPDATE_NEW = 1
UPDATE_UPDATED = 2
UPDATE_DELETED = 3


@dataclass(frozen=True, slots=True)
class EncodedUpdate:
    """An update encoded once: ``value_bytes`` is the packed value (``PACKED_NIL`` for a
    deletion) and ``kv_bytes`` the packed ``[key, value]`` pair that goes on the wire;
    ``revision`` its datastore revision, when the datastore knows it."""

    key: str
    value_bytes: bytes
    kv_bytes: bytes
    revision: Revision = None

    @property
    def is_delete(self) -> bool:
        return self.value_bytes == PACKED_NIL

    @classmethod
    def build(cls, key: str, value_bytes: bytes, revision: Revision = None) -> EncodedUpdate:
        return cls(key, value_bytes, encode_kv(key, value_bytes), revision)


@dataclass(slots=True)
class Breadcrumb:
    """One step of history. ``frames`` is what a caught-up client receives for it."""

    seq: int
    prev_revision: int | None
    revision: int | None
    timestamp: float
    kv_bytes: list[bytes]
    status: SyncStatus | None  # set when this crumb changed the sync status
    batch_start: bool = True  # first crumb of one datastore batch
    complete: bool = True  # last crumb of its batch: ``revision`` is fully reached here
    # Per KV: the update type (one byte each) and the revision (the same objects the state
    # holds; None when no KV of the crumb has one).
    kv_types: bytes = b""
    kv_revisions: list[Revision] | None = None
    # The native protocol's frames, built on first use: a server whose clients all speak gob
    # never pays for them (~2 µs per KV while the first list loads).
    _frames_plain: bytes | None = None
    _frames_zstd: bytes | None = None
    # Other wire encodings of this crumb, by codec key (built on first use, then shared).
    _encoded: dict[str, bytes] | None = None

    @property
    def n_kvs(self) -> int:
        return len(self.kv_bytes)

    @property
    def frames(self) -> bytes:
        """What a caught-up native client receives for this crumb (built once, shared)."""
        if self._frames_plain is None:
            self._frames_plain = _encode_crumb(self, compress=False)
        return self._frames_plain

    def frames_for(self, zstd: bool) -> bytes:
        """The crumb's frames; with ``zstd`` compressed once and cached (shared by clients)."""
        if not zstd:
            return self.frames
        if self._frames_zstd is None:
            self._frames_zstd = _encode_crumb(self, compress=True)
        return self._frames_zstd

    def encoded(self, key: str, build: Callable[[Breadcrumb], bytes]) -> bytes:
        """This crumb in another wire encoding (``key``): ``build`` runs once, on first use,
        and every client of that encoding gets the same bytes object."""
        cache = self._encoded
        if cache is None:
            cache = self._encoded = {}
        data = cache.get(key)
        if data is None:
            data = cache[key] = build(self)
        return data


def _newer_than(items: Iterable[_T], seq: int, seq_of: Callable[[_T], int]) -> Iterator[_T]:
    """The items of a change-ordered collection changed after ``seq``, newest first."""
    for item in reversed(items):  # type: ignore[call-overload]
        if seq_of(item) <= seq:
            return
        yield item


def _update_types(chunk: list[EncodedUpdate], state: dict[str, _Entry]) -> bytes:
    """Each update's type, one byte per KV: deleted, new (key absent before, counting earlier
    updates of the same chunk) or updated."""
    present: dict[str, bool] = {}
    out = bytearray()
    for u in chunk:
        existed = present.get(u.key)
        if existed is None:
            existed = u.key in state
        if u.is_delete:
            out.append(UPDATE_DELETED)
        else:
            out.append(UPDATE_UPDATED if existed else UPDATE_NEW)
        present[u.key] = not u.is_delete
    return bytes(out)


def _encode_crumb(crumb: Breadcrumb, *, compress: bool) -> bytes:
    parts = []
    if crumb.kv_bytes:
        payload = encode_kvs_payload(KVKind.DELTA, crumb.seq, crumb.revision, crumb.kv_bytes)
        parts.append(best_frame(payload) if compress else frame(payload))
    if crumb.status is not None:
        parts.append(frame(encode_payload(SyncStatusMsg(crumb.status))))
    return b"".join(parts)


@dataclass(slots=True)
class _Entry:
    value_bytes: bytes
    kv_bytes: bytes
    changed_seq: int
    revision: Revision = None


@dataclass(eq=False, slots=True)
class SavedBodies:
    """Each KV's bytes in another wire encoding, saved with the cache file at a clean shutdown
    and loaded with it, so that the first snapshots after a warm restart join them instead of
    encoding every value again (``typha.server.gob_codec``: Calico's gob struct bodies).

    ``variant`` names the encoding and its options; ``by_kv`` maps the ``id`` of a restored
    entry's ``kv_bytes`` to (those bytes, the entry's revision, its key, the encoded bytes).
    Holding the ``kv_bytes`` object keeps its ``id`` from being reused, so a hit (``get``) is
    exactly the restored entry, unchanged; a key changed since has new bytes and misses."""

    variant: str
    by_kv: dict[int, tuple[bytes, Revision, str, bytes]]

    def get(self, kv: bytes, revision: Revision) -> tuple[str, bytes] | None:
        """(key, saved bytes) of this KV if it is the restored one, else None."""
        hit = self.by_kv.get(id(kv))
        if hit is None or hit[0] is not kv or hit[1] != revision:
            return None
        return hit[2], hit[3]

    def __len__(self) -> int:
        return len(self.by_kv)


@dataclass(eq=False, slots=True)
class HistoryHold:
    """Keeps the breadcrumbs after ``seq`` from ageing out of the history until ``until`` (the
    view's clock; infinite until set). ``on_used`` is called once, the first time the hold
    actually keeps a breadcrumb that has aged out."""

    seq: int
    until: float = float("inf")
    on_used: Callable[[], None] | None = None
    used: bool = False


@dataclass(slots=True)
class ViewStats:
    updates_total: int = 0
    updates_skipped: int = 0
    resyncs: int = 0
    resync_deletions: int = 0


@dataclass
class SyncerView:
    """The state and history for one syncer type."""

    syncer: SyncerType
    max_batch_size: int = 100
    max_history_secs: float = 300.0
    max_history_updates: int = 200_000
    tombstone_retention_secs: float = 3600.0
    clock: Callable[[], float] = time.monotonic

    state: dict[str, _Entry] = field(default_factory=dict, init=False)
    crumbs: deque[Breadcrumb] = field(default_factory=deque, init=False)
    status: SyncStatus = field(default=SyncStatus.WAIT_FOR_DATASTORE, init=False)
    revision: int | None = field(default=None, init=False)
    head_seq: int = field(default=0, init=False)
    stats: ViewStats = field(default_factory=ViewStats, init=False)
    # key -> (seq at which it was deleted, time, deletion kv bytes); insertion-ordered by seq.
    _tombstones: dict[str, tuple[int, float, bytes]] = field(default_factory=dict, init=False)
    # Catch-up is possible from any position >= this (older tombstones were discarded).
    tombstone_floor: int = field(default=0, init=False)
    _history_updates: int = field(default=0, init=False)
    _resync_seen: set[str] | None = field(default=None, init=False)
    _holds: set[HistoryHold] = field(default_factory=set, init=False)
    # Clients at a revision >= this can be replayed from the history (None: not yet known,
    # i.e. before the first complete list).
    _base_revision: int | None = field(default=None, init=False)
    # (seq, limit) of the last count that found more than ``limit`` changes since ``seq``: a
    # flood of resumes from old positions is refused without counting again. It stays true as
    # the view moves on: the changes since a position only grow (a tombstone that expires was
    # older than every position still allowed a catch-up, ``tombstone_floor``).
    _too_many: tuple[int, int] | None = field(default=None, init=False)
    # After a warm restart from a clean shutdown's file: the saved per-KV bytes of another
    # encoding (see SavedBodies), until the application lets them go.
    saved_bodies: SavedBodies | None = field(default=None, init=False)

    # --- Queries --------------------------------------------------------------------------------

    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest retained breadcrumb (head + 1 if there is none)."""
        return self.crumbs[0].seq if self.crumbs else self.head_seq + 1

    @property
    def history_base_revision(self) -> int | None:
        """A client at a revision ≥ this can be resumed from the history by revision."""
        return self._base_revision

    def can_resume_from_seq(self, seq: int) -> bool:
        return self.oldest_seq - 1 <= seq <= self.head_seq

    def can_catch_up_from_seq(self, seq: int) -> bool:
        return self.tombstone_floor <= seq <= self.head_seq

    def crumbs_after(self, seq: int) -> Iterator[Breadcrumb]:
        """Retained breadcrumbs with a sequence number greater than ``seq``."""
        if not self.crumbs:
            return iter(())
        start = max(0, seq + 1 - self.crumbs[0].seq)
        return (self.crumbs[i] for i in range(start, len(self.crumbs)))

    def seq_for_revision(self, revision: int) -> int | None:
        """The sequence number a client at datastore ``revision`` is at, if the history covers
        it (used to resume a client that comes from another replica or an earlier epoch).

        Replaying every retained breadcrumb after that sequence number brings such a client to
        the head: breadcrumbs at or below its revision are skipped, later ones applied in order.
        """
        base = self._base_revision
        if base is None or self.revision is None or not base <= revision <= self.revision:
            return None
        seq = self.oldest_seq - 1
        for crumb in self.crumbs:
            if crumb.revision is not None and crumb.revision > revision:
                break
            if crumb.complete:
                seq = crumb.seq
        return seq

    def __len__(self) -> int:
        return len(self.state)

    # --- Holds -----------------------------------------------------------------------------------

    def hold_history(self, seq: int, on_used: Callable[[], None] | None = None) -> HistoryHold:
        """Keep the breadcrumbs after ``seq`` from ageing out until the hold's ``until`` (set
        it when the grace period starts) or until :meth:`release`."""
        hold = HistoryHold(seq, on_used=on_used)
        self._holds.add(hold)
        return hold

    def release(self, hold: HistoryHold) -> None:
        self._holds.discard(hold)

    def _held(self, seq: int, now: float) -> bool:
        """Whether a live hold needs breadcrumb ``seq`` (expired holds are dropped)."""
        held = False
        for hold in list(self._holds):
            if hold.until < now:
                self._holds.discard(hold)
            elif hold.seq < seq:
                held = True
                if not hold.used:
                    hold.used = True
                    if hold.on_used is not None:
                        hold.on_used()
        return held

    @property
    def tombstone_count(self) -> int:
        """Deleted keys remembered for conflated catch-up (bounded by the retention time)."""
        return len(self._tombstones)

    # --- Updates ---------------------------------------------------------------------------------

    def apply(
        self, updates: Iterable[EncodedUpdate], revision: int | None = None
    ) -> list[Breadcrumb]:
        """Apply a batch of updates; returns the breadcrumbs minted (maybe none)."""
        changed: list[EncodedUpdate] = []
        seen = self._resync_seen
        state = self.state
        # Value bytes as of earlier updates in this batch, so that a batch holding the same key
        # twice (put then delete, say) is deduplicated against the right predecessor.
        pending: dict[str, bytes] = {}
        for upd in updates:
            self.stats.updates_total += 1
            if seen is not None:
                seen.add(upd.key)
            if upd.key in pending:
                before: bytes | None = pending[upd.key]
            else:
                old = state.get(upd.key)
                before = old.value_bytes if old is not None else PACKED_NIL
            if before == upd.value_bytes:
                self.stats.updates_skipped += 1
                continue
            pending[upd.key] = upd.value_bytes
            changed.append(upd)
        prev_revision = self.revision
        if revision is not None:
            self.revision = revision
        return self._mint(changed, prev_revision)

    def set_status(self, status: SyncStatus) -> list[Breadcrumb]:
        if status == self.status:
            return []
        self.status = status
        return self._mint([], self.revision, status_change=True)

    def begin_resync(self) -> list[Breadcrumb]:
        self._resync_seen = set()
        self.stats.resyncs += 1
        return self.set_status(SyncStatus.RESYNC)

    def end_resync(self, revision: int | None = None) -> list[Breadcrumb]:
        """Delete every key the resync did not list; then the view is in sync.

        Without a resync in progress (a warm-restarted cache whose watch has caught up), there
        is nothing to diff: the view just becomes in sync.
        """
        if self._resync_seen is None:
            crumbs = self.apply([], revision)
            return crumbs + self.set_status(SyncStatus.IN_SYNC)
        seen = self._resync_seen
        self._resync_seen = None
        gone = [k for k in self.state if k not in seen]
        self.stats.resync_deletions += len(gone)
        deletions = [EncodedUpdate.build(k, PACKED_NIL) for k in gone]
        crumbs = self.apply(deletions, revision)
        # A resync's breadcrumbs are a diff from our previous state, not the datastore's
        # history: a client that saw some revision in between (on another replica) cannot be
        # replayed through them. Only clients at or after the listed revision can, by revision.
        # (By sequence number replay stays exact: a client's state is one of our states.)
        if self._base_revision is None:
            self._base_revision = self.revision
        elif self.revision is not None:
            self._base_revision = max(self._base_revision, self.revision)
        crumbs += self.set_status(SyncStatus.IN_SYNC)
        return crumbs

    @property
    def resync_in_progress(self) -> bool:
        return self._resync_seen is not None

    def _mint(
        self, changed: list[EncodedUpdate], prev_revision: int | None, status_change: bool = False
    ) -> list[Breadcrumb]:
        if not changed and not status_change:
            return []
        now = self.clock()
        out: list[Breadcrumb] = []
        size = max(1, self.max_batch_size)
        chunks = [changed[i : i + size] for i in range(0, len(changed), size)] or [[]]
        for i, chunk in enumerate(chunks):
            self.head_seq += 1
            seq = self.head_seq
            # New or updated is judged against the state before this chunk's updates.
            kv_types = _update_types(chunk, self.state)
            revs = [u.revision for u in chunk]
            for upd in chunk:
                self._apply_one(upd, seq, now)
            last = i == len(chunks) - 1
            crumb = Breadcrumb(
                seq=seq,
                prev_revision=prev_revision,
                # Only the last chunk of a batch reaches the batch's revision: a client that
                # stops after an earlier chunk must not claim it (it would resume past updates
                # it never saw).
                revision=self.revision if last else prev_revision,
                timestamp=now,
                kv_bytes=[u.kv_bytes for u in chunk],
                # A client is never told "in sync" before the batch's updates (Typha rule).
                status=self.status if (status_change and last) else None,
                batch_start=i == 0,
                complete=last,
                kv_types=kv_types,
                kv_revisions=revs if any(r is not None for r in revs) else None,
            )
            self.crumbs.append(crumb)
            self._history_updates += len(chunk)
            out.append(crumb)
        self._trim(now)
        return out

    def _apply_one(self, upd: EncodedUpdate, seq: int, now: float) -> None:
        if upd.is_delete:
            del self.state[upd.key]
            self._tombstones.pop(upd.key, None)  # re-insert to keep seq order
            self._tombstones[upd.key] = (seq, now, upd.kv_bytes)
        else:
            state = self.state
            if upd.key in state:
                del state[upd.key]  # re-insert to keep change order
            state[upd.key] = _Entry(upd.value_bytes, upd.kv_bytes, seq, upd.revision)
            if upd.key in self._tombstones:
                del self._tombstones[upd.key]

    def _trim(self, now: float) -> None:
        crumbs = self.crumbs
        # Keep at least the newest crumb so that revisions and resume positions stay anchored.
        while len(crumbs) > 1:
            if self._history_updates <= self.max_history_updates and (
                now - crumbs[0].timestamp <= self.max_history_secs
                or (self._holds and self._held(crumbs[0].seq, now))
            ):
                break
            old = crumbs.popleft()
            self._history_updates -= old.n_kvs
            if self._base_revision is not None and old.revision is not None:
                self._base_revision = max(self._base_revision, old.revision)
        if self._base_revision is not None and crumbs and not crumbs[0].batch_start:
            # The start of a batch was trimmed: by revision, only clients past that whole batch
            # can be replayed (by sequence number, resuming mid-batch stays exact).
            for crumb in crumbs:
                if crumb.complete:
                    if crumb.revision is not None:
                        self._base_revision = max(self._base_revision, crumb.revision)
                    break
        tombs = self._tombstones
        while tombs:
            key = next(iter(tombs))
            seq, when, _ = tombs[key]
            if now - when <= self.tombstone_retention_secs:
                break
            del tombs[key]
            self.tombstone_floor = max(self.tombstone_floor, seq)

    # --- Catch-up --------------------------------------------------------------------------------

    def changed_since(self, seq: int) -> list[bytes]:
        """Latest KV bytes of every key changed after ``seq``, deletions included.

        Only valid when ``can_catch_up_from_seq(seq)``. Time proportional to the result (the
        state and tombstones are in change order), with no copy of the values: the returned
        list holds references to the shared encoded KVs.
        """
        out = [e.kv_bytes for e in _newer_than(self.state.values(), seq, lambda e: e.changed_seq)]
        out.reverse()
        tombs = [t[2] for t in _newer_than(self._tombstones.values(), seq, lambda t: t[0])]
        tombs.reverse()
        out.extend(tombs)
        return out

    def count_changed_since(self, seq: int, limit: int) -> int:
        """How many KVs ``changed_since(seq)`` would return, counting at most ``limit + 1``
        (so the answer to "more than ``limit``?" costs at most ``limit`` steps)."""
        memo = self._too_many
        if memo is not None and seq <= memo[0] and limit <= memo[1]:
            return limit + 1  # no steps: an older position has at least as many changes
        n = 0
        for e in _newer_than(self.state.values(), seq, lambda e: e.changed_seq):
            n += 1
            if n > limit:
                # These limit + 1 keys all changed after every position before this one's
                # change: remember the newest such position, not just ``seq``.
                self._too_many = (e.changed_seq - 1, limit)
                return n
        for _ in _newer_than(self._tombstones.values(), seq, lambda t: t[0]):
            n += 1
            if n > limit:
                self._too_many = (seq, limit)
                return n
        return n

    def all_kvs(self) -> list[bytes]:
        return [e.kv_bytes for e in self.state.values()]

    def all_kvs_with_revisions(self) -> tuple[list[bytes], list[Revision] | None]:
        """The state's KVs and, in the same order, their revisions (None if no key has one)."""
        entries = list(self.state.values())
        kvs = [e.kv_bytes for e in entries]
        revs = [e.revision for e in entries]
        return kvs, (revs if any(r is not None for r in revs) else None)

    # --- Persistence hooks (warm restart) --------------------------------------------------------

    def export_state(self) -> dict[str, tuple[bytes, int]]:
        return {k: (e.value_bytes, e.changed_seq) for k, e in self.state.items()}
