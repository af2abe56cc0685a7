"""Shared snapshots: built, encoded and compressed once per syncer view, reused by every client
that joins while the snapshot is current (Typha's binary snapshot, calico#7047)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from typha.protocol import (
    BatchDone,
    KVKind,
    SyncStatus,
    SyncStatusMsg,
    best_frame,
    encode_kvs_payload,
    encode_payload,
    frame,
)

from .view import Revision, SavedBodies, SyncerView

SNAPSHOT_CHUNK_KVS = 1000


@dataclass(slots=True)
class Snapshot:
    """A complete snapshot at ``seq``: the encoded KVs it is made of (references to the view's
    shared bytes, no copy), from which each wire encoding is built on first use
    (:meth:`encoded`) and then shared by every joiner that needs it.

    No encoding is built up front: a Typha serving only Calico's gob clients never holds our
    msgpack frames (plain and zstd were ~43 % of a snapshot generation's memory).
    """

    seq: int
    revision: int | None
    status: SyncStatus
    n_kvs: int
    created: float
    kvs: list[bytes] = field(default_factory=list, repr=False)
    # The KVs' revisions, in the same order (None if no KV has one).
    kv_revisions: list[Revision] | None = field(default=None, repr=False)
    # The view's saved per-KV bytes of another encoding, if it has some (warm restart).
    saved_bodies: SavedBodies | None = field(default=None, repr=False)
    # Called once per encoding when it is built (key, bytes): the size metrics.
    on_encoded: Callable[[str, bytes], None] | None = field(default=None, repr=False)
    _encoded: dict[str, bytes | trio.Event] = field(default_factory=dict, repr=False)
    # Per wire encoding: the breadcrumbs after this snapshot that its joiners have needed so
    # far, joined once (last seq, bytes, KV count) and extended by each later joiner.
    tails: dict[str, tuple[int, bytes, int]] = field(default_factory=dict, repr=False)

    async def encoded(self, key: str, build: Callable[[Snapshot], bytes]) -> bytes:
        """This snapshot in a wire encoding (``key``): ``build`` runs once, in a worker
        thread (it must only read this snapshot), while joiners that ask meanwhile wait for it;
        all of them get the same bytes object."""
        while True:
            got = self._encoded.get(key)
            if isinstance(got, bytes):
                return got
            if got is not None:
                await got.wait()
                continue
            done = self._encoded[key] = trio.Event()
            try:
                data = await trio.to_thread.run_sync(build, self)
            except BaseException:
                del self._encoded[key]
                raise
            finally:
                done.set()
            self._encoded[key] = data
            if self.on_encoded is not None:
                self.on_encoded(key, data)
            return data

    async def msgpack(self, compressed: bool) -> bytes:
        """Our protocol's snapshot frames (docs/protocol.md), zstd-compressed or plain."""
        key = "msgpack+zstd" if compressed else "msgpack"
        return await self.encoded(key, lambda s: msgpack_snapshot_bytes(s, compressed))


def encode_snapshot(
    seq: int, revision: int | None, status: SyncStatus, kvs: list[bytes], created: float
) -> Snapshot:
    """A snapshot of ``kvs`` (no encoding is built until a joiner asks for one)."""
    return Snapshot(seq, revision, status, len(kvs), created, kvs)


def msgpack_snapshot_bytes(snap: Snapshot, compressed: bool) -> bytes:
    """KVs(kind=snapshot) frames of up to 1,000 KVs, BatchDone, SyncStatus (CPU-bound; safe in
    a worker thread: reads only the snapshot's immutable bytes)."""
    kvs, seq, revision = snap.kvs, snap.seq, snap.revision
    to_frame = best_frame if compressed else frame
    parts = [
        to_frame(
            encode_kvs_payload(KVKind.SNAPSHOT, seq, revision, kvs[i : i + SNAPSHOT_CHUNK_KVS])
        )
        for i in range(0, len(kvs), SNAPSHOT_CHUNK_KVS)
    ]
    parts.append(frame(encode_payload(BatchDone(KVKind.SNAPSHOT, seq, revision, len(kvs)))))
    parts.append(frame(encode_payload(SyncStatusMsg(snap.status))))
    return b"".join(parts)


@dataclass
class SnapshotCache:
    """At most one current snapshot per view; concurrent joiners wait for the one being built.

    A snapshot stays current while nothing has been minted since it (it is still exact, so a
    rebuild would make the same bytes), or while it is younger than ``reuse_secs`` and the
    history still holds every breadcrumb after it (so a joiner can follow the deltas from its
    sequence number). The first rule matters for a long join on a quiet datastore: without it
    every ``reuse_secs`` of the join built another generation, and each stayed in memory until
    its slowest joiner had been sent it.
    """

    view: SyncerView
    reuse_secs: float = 10.0
    clock: Callable[[], float] = time.monotonic
    on_generated: Callable[[Snapshot], None] | None = None
    on_reused: Callable[[], None] | None = None
    on_encoded: Callable[[str, bytes], None] | None = None
    generated: int = field(default=0, init=False)
    reused: int = field(default=0, init=False)
    _current: Snapshot | None = field(default=None, init=False)
    _building: trio.Event | None = field(default=None, init=False)

    def _usable(self, snap: Snapshot | None) -> bool:
        if snap is None:
            return False
        if snap.seq == self.view.head_seq:
            return True  # unchanged since: exact whatever its age
        return self.clock() - snap.created < self.reuse_secs and self.view.can_resume_from_seq(
            snap.seq
        )

    async def get(self) -> Snapshot:
        while True:
            if self._usable(self._current):
                assert self._current is not None
                self.reused += 1
                if self.on_reused:
                    self.on_reused()
                return self._current
            if self._building is None:
                return await self._build()
            await self._building.wait()

    async def _build(self) -> Snapshot:
        self._building = trio.Event()
        try:
            view = self.view
            # Taking the references is fast and sees one consistent state; each wire encoding
            # is built from them when a joiner first needs it (``Snapshot.encoded``), in a
            # worker thread.
            kvs, revs = view.all_kvs_with_revisions()
            snap = encode_snapshot(view.head_seq, view.revision, view.status, kvs, self.clock())
            snap.kv_revisions = revs
            snap.saved_bodies = view.saved_bodies
            snap.on_encoded = self.on_encoded
            self._current = snap
            self.generated += 1
            if self.on_generated:
                self.on_generated(snap)
            return snap
        finally:
            self._building.set()
            self._building = None
