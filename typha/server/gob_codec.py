"""Calico's gob protocol as a fast-path codec: each breadcrumb and each snapshot encoded once.

The view stores one form of every value (the msgpack ``kv_bytes``); the gob bytes are derived
from it here, when a breadcrumb or a snapshot is first needed in gob, and cached on it:

* a breadcrumb becomes MsgKVs of at most ``ServerMaxMessageSize`` KVs (and a MsgSyncStatus
  when it changed the status), encoded once; for snappy clients those bytes are compressed
  once into snappy data chunks. Every gob client of the codec gets the same bytes object;
* a snapshot becomes MsgKVs of 1,000 KVs each, every KV marked New (as Go Typha's snapshot),
  then MsgSyncStatus — built once per snapshot in a worker thread, compressed once.

The bytes are valid after the session's preamble of the same kind (docs/protocol.md, 8.4),
which is what makes them independent of the stream they are written to.
"""

from __future__ import annotations

import json
import re

import msgpack
import orjson

from typha import metrics
from typha.cache.snapshot import Snapshot
from typha.cache.view import Breadcrumb, Revision, revision_text
from typha.protocol.gob import (
    SNAPSHOT_KVS_PER_MESSAGE,
    SerializedUpdate,
    UpdateType,
    encode_update_body,
    kvs_part_bodies,
    status_part,
)
from typha.protocol.gob import snappy as gob_snappy
from typha.protocol.gob.encoder import count_snappy_compression

# Go's encoding/json escapes these inside strings (HTML safety); they can only occur inside
# strings in JSON text, so replacing them in the whole text is exact.
_GO_ESCAPES_TABLE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPES = str.maketrans(_GO_ESCAPES_TABLE)


# The same in UTF-8 (U+2028/U+2029 are E2 80 A8/A9), for orjson's bytes.
_GO_ESCAPES_UTF8 = re.compile(rb"[<>&]|\xe2\x80[\xa8\xa9]")
_GO_ESCAPE_OF = {ch.encode(): esc.encode() for ch, esc in _GO_ESCAPES_TABLE.items()}

# msgpack's float markers: a packed value without either byte holds no float.
_MSGPACK_FLOAT32, _MSGPACK_FLOAT64 = b"\xca", b"\xcb"


def may_hold_floats(packed: bytes) -> bool:
    """False only if the msgpack bytes certainly hold no float (a marker byte can also occur
    inside a string or an integer: then True, which only costs speed)."""
    return _MSGPACK_FLOAT64 in packed or _MSGPACK_FLOAT32 in packed


def go_value_bytes(value: object, *, floats: bool = True) -> bytes:
    """A model value as libcalico-go's ``SerializeValue`` writes it: a string value raw (the
    config keys' values), anything else as compact JSON in Go's escaping. Our dicts already
    carry Go's field names and order (docs/model.md).

    With ``floats=False`` (the value holds no float) orjson writes the JSON, twice as fast as
    ``json`` and byte-identical for strings, integers, booleans, null, lists and dicts; floats
    are left to ``json``, whose formatting orjson does not share (``1e-05`` vs ``0.00001``,
    ``NaN`` vs ``null``)."""
    if isinstance(value, str):
        return value.encode()
    if not floats:
        try:
            data = orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError too; json decides (and raises the same way)
            pass
        else:
            # One C pass deleting the candidate bytes (E2 leads U+2028/U+2029 and other
            # characters) is ~5 times cheaper than a regex search for the rare text that needs it.
            if len(data.translate(None, b"<>&\xe2")) != len(data):
                return _GO_ESCAPES_UTF8.sub(lambda m: _GO_ESCAPE_OF[m.group()], data)
            return data
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_ESCAPES).encode()


_V3_PREFIX = "/calico/resources/v3/"
_V3_PROFILES = _V3_PREFIX + "projectcalico.org/profiles/"


def _fields(
    kv: bytes, rev: Revision, v3_resource_versions: bool
) -> tuple[str, bytes | None, str | None, str]:
    """(key, Go value bytes or None for a deletion, revision, V3ResourceVersion) of a view KV."""
    key, value = msgpack.unpackb(kv, raw=False)
    revision = revision_text(rev)
    if value is None:
        return key, None, revision, ""
    v3 = ""
    if (
        v3_resource_versions
        and revision is not None
        and key.startswith(_V3_PREFIX)
        and not key.startswith(_V3_PROFILES)
    ):
        v3 = revision
    return key, go_value_bytes(value, floats=may_hold_floats(kv)), revision, v3


def serialized_update(
    kv: bytes, rev: Revision, update_type: int, v3_resource_versions: bool = False
) -> SerializedUpdate:
    """One view KV (packed ``[key, value]``) as a gob SerializedUpdate with its revision.

    With ``v3_resource_versions`` (Kubernetes) a v3 resource (a ``/calico/resources/v3/`` key)
    also carries the revision as its V3ResourceVersion: the object's resourceVersion, which Go
    Typha moves out of the value (our converters never put it into the value) and Calico's
    client puts back.  Not for profiles: Kubernetes stores none, they are built from namespaces
    and service accounts (their revision is ``<ns rv>/<sa rv>``) or are synthetic, and Calico's
    profile objects have no resourceVersion.  On etcd Calico's v3 objects carry none either."""
    key, value, revision, v3 = _fields(kv, rev, v3_resource_versions)
    if value is None:
        return SerializedUpdate(key, None, revision, "", 0, UpdateType.DELETED)
    return SerializedUpdate(key, value, revision, v3, 0, update_type)


def update_body(
    kv: bytes, rev: Revision, update_type: int, v3_resource_versions: bool = False
) -> bytes:
    """``serialized_update``'s gob struct body, without the intermediate object."""
    return _body(*_fields(kv, rev, v3_resource_versions), update_type)


def _body(key: str, value: bytes | None, revision: str | None, v3: str, update_type: int) -> bytes:
    if value is None:
        return encode_update_body(key.encode(), None, revision, "", UpdateType.DELETED)
    return encode_update_body(key.encode(), value, revision, v3, update_type)


class GobCodec:
    """Calico's gob, plain or snappy (``fastpath.FastPathCodec``). Use ``gob_codec``: the
    fan-out joins a run once per codec *object*, so all connections must share one."""

    def __init__(
        self, snappy: bool, max_kvs_per_message: int, v3_resource_versions: bool = False
    ) -> None:
        self.snappy = snappy
        self.max_kvs = max_kvs_per_message
        self.v3_resource_versions = v3_resource_versions
        self.key = "gob+snappy" if snappy else "gob"
        # Cache keys on breadcrumbs and snapshots (the KVs per message and the resource
        # version rule shape the bytes).
        v3 = "/v3rv" if v3_resource_versions else ""
        self._plain_key = f"gob/{max_kvs_per_message}{v3}"
        self._snappy_key = f"gob+snappy/{max_kvs_per_message}{v3}"
        self._snap_plain_key = f"gob{v3}"
        self._snap_snappy_key = f"gob+snappy{v3}"

    # --- breadcrumbs ----------------------------------------------------------------------

    def _crumb_plain(self, crumb: Breadcrumb) -> bytes:
        metrics.gob_encodes.labels("breadcrumb").inc()
        parts = []
        if crumb.kv_bytes:
            revs = crumb.kv_revisions or [None] * len(crumb.kv_bytes)
            types = crumb.kv_types or bytes(len(crumb.kv_bytes))
            v3 = self.v3_resource_versions
            bodies = [
                update_body(kv, r, t, v3)
                for kv, r, t in zip(crumb.kv_bytes, revs, types, strict=True)
            ]
            parts.append(kvs_part_bodies(bodies, self.max_kvs).plain)
        if crumb.status is not None:
            parts.append(status_part(int(crumb.status)).plain)
        return b"".join(parts)

    def crumb_bytes(self, crumb: Breadcrumb) -> bytes:
        plain = crumb.encoded(self._plain_key, self._crumb_plain)
        if not self.snappy:
            return plain
        return crumb.encoded(self._snappy_key, lambda _c: _compress(plain))

    # --- snapshots ------------------------------------------------------------------------

    async def snapshot_bytes(self, snap: Snapshot) -> bytes:
        # The snapshot's chunks are always 1,000 KVs: one plain and one snappy form.
        v3 = self.v3_resource_versions
        plain = await snap.encoded(self._snap_plain_key, lambda s: _snapshot_plain(s, v3))
        if not self.snappy:
            return plain
        return await snap.encoded(self._snap_snappy_key, lambda _s: _compress(plain))

    def __repr__(self) -> str:
        return f"<codec {self.key}, {self.max_kvs} KVs per message>"


_CODECS: dict[tuple[bool, int, bool], GobCodec] = {}


def gob_codec(
    snappy: bool, max_kvs_per_message: int, v3_resource_versions: bool = False
) -> GobCodec:
    """The one shared codec object for this variant."""
    variant = (snappy, max_kvs_per_message, v3_resource_versions)
    codec = _CODECS.get(variant)
    if codec is None:
        codec = _CODECS[variant] = GobCodec(*variant)
    return codec


def _compress(plain: bytes) -> bytes:
    count_snappy_compression()
    return gob_snappy.compress_chunks(plain)


def snapshot_updates(snap: Snapshot, v3_resource_versions: bool = False) -> list[SerializedUpdate]:
    """Every KV of the snapshot, new to the client, in key order as Go Typha sends them (its
    snapshot is a B-tree walk by key). The order is not cosmetic: Felix's calculation graph
    then sees a node's endpoints (`/calico/v1/host/...`) before the policies whose selector
    sets they fill (`/calico/v1/policy/...`), so each set arrives whole; in the datastore's
    order (policies first) Felix got thousands of set deltas and took seconds longer to program
    20,000 endpoints (docs/benchmarks.md)."""
    revs = snap.kv_revisions
    updates = [
        serialized_update(kv, revs[i] if revs else None, UpdateType.NEW, v3_resource_versions)
        for i, kv in enumerate(snap.kvs)
    ]
    updates.sort(key=lambda u: u.key)
    return updates


def snapshot_body_variant(v3_resource_versions: bool) -> str:
    """The name of the per-KV bytes ``snapshot_body`` makes (a ``SavedBodies.variant``)."""
    return "gob-new/v3rv" if v3_resource_versions else "gob-new"


def snapshot_body(kv: bytes, rev: Revision, v3_resource_versions: bool = False) -> bytes:
    """One KV's gob struct body as a snapshot sends it (marked New): what a clean shutdown
    saves per KV with the cache file (``typha.cache.persist``)."""
    return update_body(kv, rev, UpdateType.NEW, v3_resource_versions)


def snapshot_bodies(snap: Snapshot, v3_resource_versions: bool = False) -> list[bytes]:
    """``snapshot_updates`` as gob struct bodies (the same order), without the intermediate
    objects: what ``_snapshot_plain`` encodes. After a warm restart the KVs that are still as
    restored take the bodies saved with the cache file (``Snapshot.saved_bodies``) instead of
    being encoded again: ~20 times cheaper per KV."""
    revs = snap.kv_revisions
    new = UpdateType.NEW
    saved = snap.saved_bodies
    if saved is not None and saved.variant != snapshot_body_variant(v3_resource_versions):
        saved = None
    keyed = []
    for i, kv in enumerate(snap.kvs):
        rev = revs[i] if revs else None
        if saved is not None and (hit := saved.get(kv, rev)) is not None:
            keyed.append(hit)
            continue
        key, value, revision, v3 = _fields(kv, rev, v3_resource_versions)
        keyed.append((key, _body(key, value, revision, v3, new)))
    keyed.sort(key=_first)
    return [body for _, body in keyed]


def _first(pair: tuple[str, bytes]) -> str:
    return pair[0]


def _snapshot_plain(snap: Snapshot, v3: bool = False) -> bytes:
    """The snapshot's MsgKVs chunks and its MsgSyncStatus (runs in a worker thread)."""
    metrics.gob_encodes.labels("snapshot").inc()
    bodies = snapshot_bodies(snap, v3)
    step = SNAPSHOT_KVS_PER_MESSAGE
    parts = []
    for i in range(0, len(bodies), step):
        parts.append(kvs_part_bodies(bodies[i : i + step], step).plain)
        # Each body is in its message now: let it go, so the build holds the bodies or the
        # messages, not both (the peak was ~3x the snapshot: bodies, messages, their join).
        bodies[i : i + step] = _NONE_CHUNK[: min(step, len(bodies) - i)]
    parts.append(status_part(int(snap.status)).plain)
    return b"".join(parts)


_NONE_CHUNK: list[None] = [None] * SNAPSHOT_KVS_PER_MESSAGE
