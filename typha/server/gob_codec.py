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
from collections.abc import Iterable

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


def serialized_update(kv: bytes, rev: Revision, update_type: int) -> SerializedUpdate:
    """One view KV (packed ``[key, value]``) as a gob SerializedUpdate with its revision.

    A v3 resource (a ``/calico/resources/v3/`` key) also carries the revision as its
    V3ResourceVersion: the object's resourceVersion, which Go Typha moves out of the value
    (our converters never put it into the value) and Calico's client puts back."""
    key, value = msgpack.unpackb(kv, raw=False)
    revision = revision_text(rev)
    if value is None:
        return SerializedUpdate(key, None, revision, "", 0, UpdateType.DELETED)
    v3 = revision if revision is not None and key.startswith(_V3_PREFIX) else ""
    return SerializedUpdate(key, go_value_bytes(value), revision, v3, 0, update_type)


class GobCodec:
    """Calico's gob, plain or snappy (``fastpath.FastPathCodec``). Use ``gob_codec``: the
    fan-out joins a run once per codec *object*, so all connections must share one."""

    def __init__(self, snappy: bool, max_kvs_per_message: int) -> None:
        self.snappy = snappy
        self.max_kvs = max_kvs_per_message
        self.key = "gob+snappy" if snappy else "gob"
        # Cache keys on breadcrumbs and snapshots (the KVs per message shape the bytes).
        self._plain_key = f"gob/{max_kvs_per_message}"
        self._snappy_key = f"gob+snappy/{max_kvs_per_message}"

    # --- breadcrumbs ----------------------------------------------------------------------

    def _crumb_plain(self, crumb: Breadcrumb) -> bytes:
        metrics.gob_encodes.labels("breadcrumb").inc()
        parts = []
        if crumb.kv_bytes:
            revs = crumb.kv_revisions or [None] * len(crumb.kv_bytes)
            types = crumb.kv_types or bytes(len(crumb.kv_bytes))
            updates = [
                serialized_update(kv, r, t)
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
        plain = await snap.encoded("gob", _snapshot_plain)
        if not self.snappy:
            return plain
        return await snap.encoded("gob+snappy", lambda _s: _compress(plain))

    def __repr__(self) -> str:
        return f"<codec {self.key}, {self.max_kvs} KVs per message>"


_CODECS: dict[tuple[bool, int], GobCodec] = {}


def gob_codec(snappy: bool, max_kvs_per_message: int) -> GobCodec:
    """The one shared codec object for this variant."""
    codec = _CODECS.get((snappy, max_kvs_per_message))
    if codec is None:
        codec = _CODECS[snappy, max_kvs_per_message] = GobCodec(snappy, max_kvs_per_message)
    return codec


def _compress(plain: bytes) -> bytes:
    count_snappy_compression()
    return gob_snappy.compress_chunks(plain)


def _snapshot_updates(snap: Snapshot, start: int, end: int) -> Iterable[SerializedUpdate]:
    revs = snap.kv_revisions
    for i in range(start, end):
        # Everything in a snapshot is new to the client (as in Go Typha's snapshot).
        yield serialized_update(snap.kvs[i], revs[i] if revs else None, UpdateType.NEW)


def _snapshot_plain(snap: Snapshot) -> bytes:
    """The snapshot's MsgKVs chunks and its MsgSyncStatus (runs in a worker thread)."""
    metrics.gob_encodes.labels("snapshot").inc()
    n = len(snap.kvs)
    step = SNAPSHOT_KVS_PER_MESSAGE
    parts = [
        kvs_part(list(_snapshot_updates(snap, i, min(i + step, n))), step).plain
        for i in range(0, n, step)
    ]
    parts.append(status_part(int(snap.status)).plain)
    return b"".join(parts)
