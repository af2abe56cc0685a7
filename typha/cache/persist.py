"""Warm restart: save the cache (state, history, tombstones, epoch, revision) to a local file
and load it at start, so a restarted Typha serves clients at once, resumes their tokens and
watches the datastore from the saved revision instead of listing everything again.

No anchor does this: Calico Typha relists everything on every restart (calico#637).

The file is msgpack, written atomically (temporary file, fsync, rename). Breadcrumb ages are
stored relative to the save time and restored relative to the load time minus the downtime, so
history retention keeps counting across the restart.

Format versions: 2 adds the per-KV metadata Calico's protocol sends (each key's revision, and
each breadcrumb's update types and revisions), so gob clients of a restarted Typha get the
same Revision, V3ResourceVersion and UpdateType as before. In 3 a breadcrumb's KV that is
also a state entry's current KV (the same bytes object in memory) is written as that entry's
index in ``state``: the file holds each value once, and the restored cache shares the bytes
between state and history as the running one did. 3 also adds, in the clean shutdown's
save only, each key's bytes as a snapshot of another encoding sends them (``bodies``, named
by ``body_variant``: Calico's gob struct bodies), so the first gob snapshot after a warm
restart joins them instead of encoding every value again (docs/architecture.md, "Warm
restart"). An older file is refused as outdated (logged) and Typha starts cold; the next save
writes the current format.
"""

from __future__ import annotations

import contextlib
import operator
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from typha.model.keys import SyncerType
from typha.protocol import SyncStatus

from .feed import CacheFeed
from .view import Breadcrumb, Revision, SavedBodies, SyncerView, _Entry

# What a clean shutdown saves per KV besides the KV itself: (variant, encode(kv, revision)).
BodyEncoder = tuple[str, Callable[[bytes, Revision], bytes]]

FORMAT_VERSION = 3
# Bound the history we write: older clients get a conflated catch-up or a snapshot anyway.
MAX_SAVED_HISTORY_UPDATES = 50_000
# A file larger than this is not loaded at all (checked before reading it). 100k keys with
# their history take ~200 MB; anything far beyond is not a file we wrote.
MAX_CACHE_FILE_BYTES = 2 * 1024**3


class CacheFileError(Exception):
    """The cache file is unusable (corrupt, wrong version, wrong layout)."""


class CacheFileOutdated(CacheFileError):
    """The cache file is a well-formed file of an older format version."""


@dataclass(frozen=True, slots=True)
class LoadedCache:
    epoch: int
    clean: bool
    revision: int | None
    saved_at: float
    keys: int


def snapshot_for_save(feed: CacheFeed, epoch: int, *, clean: bool = False) -> dict[str, Any]:
    """Collect what to save, on the event loop (references only; packing happens later).

    ``clean`` marks the final save of a graceful shutdown, after every client was sent away:
    only then did no client receive breadcrumbs newer than the file, so only then may the next
    process keep the epoch (and its sequence numbers). After a crash the file can be older than
    what clients hold; the next process then takes a new epoch and clients resume by revision.
    """
    now_mono = time.monotonic()
    views: dict[str, Any] = {}
    for syncer, view in feed.views.items():
        crumbs: list[Breadcrumb] = []
        budget = MAX_SAVED_HISTORY_UPDATES
        for crumb in reversed(view.crumbs):
            budget -= crumb.n_kvs
            if budget < 0 and crumbs:
                break
            crumbs.append(crumb)
        crumbs.reverse()
        # A saved history must start at a batch boundary (see SyncerView.seq_for_revision).
        while crumbs and not crumbs[0].batch_start and len(crumbs) > 1:
            crumbs.pop(0)
        views[str(syncer)] = {
            "state": [
                (k, e.value_bytes, e.kv_bytes, e.changed_seq, e.revision)
                for k, e in view.state.items()
            ],
            # Filled by ``add_saved_bodies`` (a clean shutdown's save), in the state's order.
            "body_variant": None,
            "bodies": None,
            "tombstones": [(k, s, now_mono - t, kv) for k, (s, t, kv) in view._tombstones.items()],
            "tombstone_floor": view.tombstone_floor,
            "head_seq": view.head_seq,
            "revision": view.revision,
            "base_revision": view._base_revision,
            "status": int(view.status),
            "crumbs": [
                (
                    c.seq,
                    c.prev_revision,
                    c.revision,
                    now_mono - c.timestamp,
                    c.kv_bytes,
                    None if c.status is None else int(c.status),
                    c.batch_start,
                    c.complete,
                    c.kv_types,
                    c.kv_revisions,
                )
                for c in crumbs
            ],
            "dropped_history": len(crumbs) < len(view.crumbs),
        }
    return {
        "version": FORMAT_VERSION,
        "epoch": epoch,
        "clean": clean,
        "saved_at": time.time(),
        "synced_once": feed.synced_once,
        "views": views,
    }


def add_saved_bodies(snapshot: dict[str, Any], encoder: BodyEncoder) -> None:
    """Add each state KV's bytes in another encoding to a collected snapshot (CPU-bound: run
    it in the worker thread that writes the file; it reads only the collected references)."""
    variant, encode = encoder
    for view in snapshot["views"].values():
        view["body_variant"] = variant
        view["bodies"] = [encode(kv, rev) for _k, _v, kv, _s, rev in view["state"]]


def _share_crumb_kvs(snapshot: dict[str, Any]) -> None:
    """Each breadcrumb KV that is a state entry's current KV becomes that entry's index."""
    for view in snapshot["views"].values():
        index = {id(row[2]): i for i, row in enumerate(view["state"])}
        view["crumbs"] = [
            (*row[:4], [index.get(id(kv), kv) for kv in row[4]], *row[5:]) for row in view["crumbs"]
        ]


def write_cache_file(
    path: str, snapshot: dict[str, Any], *, before_replace: Callable[[], None] | None = None
) -> int:
    """Pack and write atomically (safe to run in a worker thread; callers serialize writes to
    one path). Returns the byte count. ``before_replace`` runs between writing the temporary
    file and renaming it (a test hook)."""
    _share_crumb_kvs(snapshot)
    data = msgpack.packb(snapshot, use_bin_type=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(data)


def read_cache_file(path: str, *, max_bytes: int = MAX_CACHE_FILE_BYTES) -> dict[str, Any] | None:
    """The saved snapshot, None if there is no file. Raises CacheFileError if unusable.

    Checked before anything is loaded: that the path is a regular file, its size (at most
    ``max_bytes``), and the format version (the first entry of the file's top-level map, as
    :func:`snapshot_for_save` writes it). msgpack bounds nesting itself (1,024 levels)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheFileError(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise CacheFileError(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise CacheFileError(
            f"{path}: {info.st_size} bytes, more than a cache file may have ({max_bytes})"
        )
    try:
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(
                f, raw=False, strict_map_key=False, use_list=True, max_buffer_size=max_bytes
            )
            entries = unpacker.read_map_header()
            if entries < 1 or unpacker.unpack() != "version":
                raise CacheFileError(f"{path}: not a cache file (no version)")
            version = unpacker.unpack()
            if isinstance(version, int) and 0 < version < FORMAT_VERSION:
                raise CacheFileOutdated(
                    f"{path}: cache file format version {version}, older than this Typha's "
                    f"({FORMAT_VERSION})"
                )
            if version != FORMAT_VERSION:
                raise CacheFileError(f"{path}: unsupported cache file version {version!r}")
            obj: dict[Any, Any] = {"version": version}
            for _ in range(entries - 1):
                key = unpacker.unpack()
                obj[key] = unpacker.unpack()
            if f.read(1) or unpacker.tell() != info.st_size:
                raise CacheFileError(f"{path}: not a cache file (extra data)")
    except CacheFileError:
        raise
    except OSError as exc:
        raise CacheFileError(f"{path}: cannot read it ({exc.strerror})") from None
    except Exception as exc:  # msgpack raises several types (OutOfData, StackError, ...)
        raise CacheFileError(f"{path}: not a cache file ({type(exc).__name__})") from None
    return obj


def restore(feed: CacheFeed, saved: dict[str, Any]) -> LoadedCache:
    """Load a saved snapshot into an empty feed. Views come back marked "resync" until the
    datastore has caught up (it then sends ResyncFinished)."""
    try:
        downtime = max(0.0, time.time() - float(saved["saved_at"]))
        now_mono = time.monotonic()
        revision: int | None = None
        keys = 0
        for name, data in saved["views"].items():
            view = feed.views.get(SyncerType(name))
            if view is None:
                continue
            _restore_view(view, data, now_mono, downtime)
            revision = view.revision
            keys += len(view)
        feed.synced_once = bool(saved.get("synced_once"))
        return LoadedCache(
            int(saved["epoch"]), bool(saved.get("clean")), revision, float(saved["saved_at"]), keys
        )
    except Exception as exc:  # any layout surprise: the file is unusable, Typha starts cold
        raise CacheFileError(f"cache file layout: {type(exc).__name__}: {exc}"[:300]) from None


def _restore_view(view: SyncerView, data: dict[str, Any], now_mono: float, downtime: float) -> None:
    if view.state or view.crumbs:
        raise ValueError("restore into a non-empty view")
    rows = data["state"]
    variant, bodies = data["body_variant"], data["bodies"]
    if variant is not None and (
        not isinstance(variant, str) or not isinstance(bodies, list) or len(bodies) != len(rows)
    ):
        raise ValueError("saved bodies do not match the state")
    if not all(type(row[4]) in _REVISION_TYPES for row in rows):
        raise ValueError("a state entry's revision is not a revision")
    # In the file's order, the breadcrumbs' references to state entries (``_share_crumb_kvs``).
    state_kvs = [row[2] for row in rows]
    saved: dict[int, tuple[bytes, Revision, str, bytes]] = {}
    if variant is not None:
        for (k, _value, kv_bytes, _seq, rev), body in zip(rows, bodies, strict=True):
            if type(body) is not bytes or type(kv_bytes) is not bytes:
                raise ValueError(f"saved body of {k!r}: not bytes")
            saved[id(kv_bytes)] = (kv_bytes, rev, k, body)
    # In change order, whatever order the file has (an older file is in first-insert order):
    # the view finds recent changes by walking from the newest (``changed_since``).
    rows.sort(key=_CHANGED_SEQ)
    view.state = {k: _Entry(value, kv_bytes, seq, rev) for k, value, kv_bytes, seq, rev in rows}
    view.saved_bodies = SavedBodies(variant, saved) if variant is not None else None
    view._tombstones = {
        k: (seq, now_mono - age - downtime, kv)
        for k, seq, age, kv in sorted(data["tombstones"], key=lambda row: row[1])
    }
    view.tombstone_floor = data["tombstone_floor"]
    view.head_seq = data["head_seq"]
    view.revision = data["revision"]
    view._base_revision = data["base_revision"]
    for row in data["crumbs"]:
        seq, prev_rev, rev, age, kvs, status, batch_start, complete, kv_types, kv_revs = row
        if len(kv_types) not in (0, len(kvs)) or (
            kv_revs is not None
            and (len(kv_revs) != len(kvs) or not all(type(r) in _REVISION_TYPES for r in kv_revs))
        ):
            raise ValueError(f"breadcrumb {seq}: per-KV metadata does not match its KVs")
        if any(type(kv) is int and kv < 0 for kv in kvs):
            raise IndexError(f"breadcrumb {seq}: a negative state index")
        crumb = Breadcrumb(
            seq=seq,
            prev_revision=prev_rev,
            revision=rev,
            timestamp=now_mono - age - downtime,
            kv_bytes=[state_kvs[kv] if type(kv) is int else kv for kv in kvs],
            status=None if status is None else SyncStatus(status),
            batch_start=batch_start,
            complete=complete,
            kv_types=bytes(kv_types),
            kv_revisions=kv_revs,
        )
        view.crumbs.append(crumb)
        view._history_updates += crumb.n_kvs
    if data.get("dropped_history") and view.crumbs and view._base_revision is not None:
        first = view.crumbs[0]
        if first.prev_revision is not None:
            view._base_revision = max(view._base_revision, first.prev_revision)
    # Serve at once, but say "resync" until the datastore confirms we are caught up.
    view.status = SyncStatus(data["status"])
    if view.status is SyncStatus.IN_SYNC:
        view.set_status(SyncStatus.RESYNC)


# The types a saved revision may have (``type(x) in``: a bool is not an int here).
_REVISION_TYPES = frozenset((int, str, type(None)))
_CHANGED_SEQ = operator.itemgetter(3)
