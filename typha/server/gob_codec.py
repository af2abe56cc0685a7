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

import msgpack

from typha import metrics
from typha.cache.snapshot import Snapshot
from typha.cache.view import Breadcrumb, Revision, revision_text
from typha.protocol.gob import (
    SNAPSHOT_KVS_PER_MESSAGE,
    SerializedUpdate,
    UpdateType,
    kvs_part,
    status_part,
)
from typha.protocol.gob import snappy as gob_snappy
from typha.protocol.gob.encoder import count_snappy_compression

# Go's encoding/json escapes these inside strings (HTML safety); they can only occur inside
# strings in JSON text, so replacing them in the whole text is exact.
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_value_bytes(value: object) -> bytes:
    """A model value as libcalico-go's ``SerializeValue`` writes it: a string value raw (the
    config keys' values), anything else as compact JSON in Go's escaping. Our dicts already
    carry Go's field names and order (docs/model.md)."""
    if isinstance(value, str):
        return value.encode()
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_ESCAPES).encode()


_V3_PREFIX = "/calico/resources/v3/"
_V3_PROFILES = _V3_PREFIX + "projectcalico.org/profiles/"


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
    key, value = msgpack.unpackb(kv, raw=False)
    revision = revision_text(rev)
    if value is None:
        return SerializedUpdate(key, None, revision, "", 0, UpdateType.DELETED)
    v3 = ""
    if (
        v3_resource_versions
        and revision is not None
        and key.startswith(_V3_PREFIX)
        and not key.startswith(_V3_PROFILES)
    ):
        v3 = revision
    return SerializedUpdate(key, go_value_bytes(value), revision, v3, 0, update_type)


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
            updates = [
                serialized_update(kv, r, t, self.v3_resource_versions)
                for kv, r, t in zip(crumb.kv_bytes, revs, types, strict=True)
            ]
            parts.append(kvs_part(updates, self.max_kvs).plain)
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


def _snapshot_plain(snap: Snapshot, v3: bool = False) -> bytes:
    """The snapshot's MsgKVs chunks and its MsgSyncStatus (runs in a worker thread)."""
    metrics.gob_encodes.labels("snapshot").inc()
    updates = snapshot_updates(snap, v3)
    step = SNAPSHOT_KVS_PER_MESSAGE
    parts = [kvs_part(updates[i : i + step], step).plain for i in range(0, len(updates), step)]
    parts.append(status_part(int(snap.status)).plain)
    return b"".join(parts)
