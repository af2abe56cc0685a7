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
    """A complete snapshot at ``seq``: KVs(kind=snapshot) frames, BatchDone, SyncStatus.

    ``kvs`` are the encoded KVs it was made of (references to the view's shared bytes, no
    copy), from which other wire encodings are built on demand (:meth:`encoded`).
    """

    seq: int
    revision: int | None
    status: SyncStatus
    n_kvs: int
    created: float
    plain: bytes
    zstd: bytes
    kvs: list[bytes] = field(default_factory=list, repr=False)
    # The KVs' revisions, in the same order (None if no KV has one).
    kv_revisions: list[Revision] | None = field(default=None, repr=False)
    # The view's saved per-KV bytes of another encoding, if it has some (warm restart).
    saved_bodies: SavedBodies | None = field(default=None, repr=False)
    _encoded: dict[str, bytes | trio.Event] = field(default_factory=dict, repr=False)
    # Per wire encoding: the breadcrumbs after this snapshot that its joiners have needed so
    # far, joined once (last seq, bytes, KV count) and extended by each later joiner.
    tails: dict[str, tuple[int, bytes, int]] = field(default_factory=dict, repr=False)

    def data(self, compressed: bool) -> bytes:
        return self.zstd if compressed else self.plain

    async def encoded(self, key: str, build: Callable[[Snapshot], bytes]) -> bytes:
        """This snapshot in another wire encoding (``key``): ``build`` runs once, in a worker
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
            return data

    @property
    def raw_bytes(self) -> int:
        return len(self.plain)

    @property
    def compressed_bytes(self) -> int:
        return len(self.zstd)


def encode_snapshot(
    seq: int, revision: int | None, status: SyncStatus, kvs: list[bytes], created: float
) -> Snapshot:
    """Encode a snapshot (CPU-bound; safe to run in a worker thread: touches only ``kvs``)."""
    plain_parts: list[bytes] = []
    zstd_parts: list[bytes] = []
    for i in range(0, len(kvs), SNAPSHOT_CHUNK_KVS):
        chunk = kvs[i : i + SNAPSHOT_CHUNK_KVS]
        payload = encode_kvs_payload(KVKind.SNAPSHOT, seq, revision, chunk)
        plain_parts.append(frame(payload))
        zstd_parts.append(best_frame(payload))
    tail = frame(encode_payload(BatchDone(KVKind.SNAPSHOT, seq, revision, len(kvs)))) + frame(
        encode_payload(SyncStatusMsg(status))
    )
    plain_parts.append(tail)
    zstd_parts.append(tail)
    return Snapshot(
        seq, revision, status, len(kvs), created, b"".join(plain_parts), b"".join(zstd_parts), kvs
    )


@dataclass
class SnapshotCache:
    """At most one current snapshot per view; concurrent joiners wait for the one being built.

    A snapshot stays current while it is younger than ``reuse_secs`` and the history still holds
    every breadcrumb after it (so a joiner can follow the deltas from its sequence number).
    """

    view: SyncerView
    reuse_secs: float = 10.0
    clock: Callable[[], float] = time.monotonic
    on_generated: Callable[[Snapshot], None] | None = None
    on_reused: Callable[[], None] | None = None
    generated: int = field(default=0, init=False)
    reused: int = field(default=0, init=False)
    _current: Snapshot | None = field(default=None, init=False)
    _building: trio.Event | None = field(default=None, init=False)

    def _usable(self, snap: Snapshot | None) -> bool:
        return (
            snap is not None
            and self.clock() - snap.created < self.reuse_secs
            and self.view.can_resume_from_seq(snap.seq)
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
            # Taking the references is fast and must see one consistent state; encoding and
            # compressing only reads those immutable bytes, so it can leave the event loop.
            kvs, revs = view.all_kvs_with_revisions()
            seq, revision, status = view.head_seq, view.revision, view.status
            snap = await trio.to_thread.run_sync(
                encode_snapshot, seq, revision, status, kvs, self.clock()
            )
            snap.kv_revisions = revs
            snap.saved_bodies = view.saved_bodies
            self._current = snap
            self.generated += 1
            if self.on_generated:
                self.on_generated(snap)
            return snap
        finally:
            self._building.set()
            self._building = None
