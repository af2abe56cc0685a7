"""The server's gob encoder: a fixed preamble, then values that depend only on their content.

Go's encoder defines each type lazily, inside the first value that needs it, so the bytes of
a value depend on what the stream carried before. Here every (re)started stream begins with
``PREAMBLE``: top-level definitions of every type the server sends, with fixed ids. After it
a value message is a pure function of the value, so a breadcrumb's MsgKVs, a status or a
snapshot chunk is encoded once (and snappy-compressed once) and the same bytes are written
to every gob connection.

A value message is ``uint(len)`` then ``int(ENVELOPE)``, field delta 1 (``Message``), the
registered name, ``int(concrete type id)``, ``uint(len(body))``, the struct body, and the
Envelope's end mark 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import snappy
from .messages import (
    NAME_DECODER_RESTART,
    NAME_KVS,
    NAME_PING,
    NAME_SERVER_HELLO,
    NAME_SYNC_STATUS,
    DecoderRestart,
    GoTime,
    SerializedUpdate,
    ServerHello,
)
from .types import BOOL, BYTES, INT, INTERFACE, STRING, UINT, Kind, WireType, encode_definition
from .wire import message, sint, string, uint

# The preamble's fixed type ids (docs/protocol.md lists them; a client must not assume them:
# it reads the definitions like any gob decoder).
ENVELOPE_ID = 65
SERVER_HELLO_ID = 66
DECODER_RESTART_ID = 67
SYNC_STATUS_ID = 68
TIME_ID = 69
PING_ID = 70
KVS_ID = 71
KV_SLICE_ID = 72
SERIALIZED_UPDATE_ID = 73

PREAMBLE_TYPES: tuple[WireType, ...] = (
    WireType(Kind.STRUCT, "Envelope", ENVELOPE_ID, fields=(("Message", INTERFACE),)),
    WireType(
        Kind.STRUCT,
        "MsgServerHello",
        SERVER_HELLO_ID,
        fields=(
            ("Version", STRING),
            ("SyncerType", STRING),
            ("SupportsNodeResourceUpdates", BOOL),
            ("ServerConnID", UINT),
        ),
    ),
    WireType(
        Kind.STRUCT,
        "MsgDecoderRestart",
        DECODER_RESTART_ID,
        fields=(("Message", STRING), ("CompressionAlgorithm", STRING)),
    ),
    WireType(Kind.STRUCT, "MsgSyncStatus", SYNC_STATUS_ID, fields=(("SyncStatus", UINT),)),
    WireType(Kind.GOB_ENCODER, "Time", TIME_ID),
    WireType(Kind.STRUCT, "MsgPing", PING_ID, fields=(("Timestamp", TIME_ID),)),
    WireType(Kind.STRUCT, "MsgKVs", KVS_ID, fields=(("KVs", KV_SLICE_ID),)),
    WireType(Kind.SLICE, "[]syncproto.SerializedUpdate", KV_SLICE_ID, elem=SERIALIZED_UPDATE_ID),
    WireType(
        Kind.STRUCT,
        "SerializedUpdate",
        SERIALIZED_UPDATE_ID,
        fields=(
            ("Key", STRING),
            ("Value", BYTES),
            ("Revision", INTERFACE),
            ("V3ResourceVersion", STRING),
            ("TTL", INT),
            ("UpdateType", UINT),
        ),
    ),
)

PREAMBLE = b"".join(message(encode_definition(t)) for t in PREAMBLE_TYPES)
# What a snappy stream starts with after each restart (constant, compressed once).
SNAPPY_PREAMBLE = snappy.STREAM_IDENTIFIER + snappy.compress_chunks(PREAMBLE)

# Per-server defaults, as in Go Typha: KVs per MsgKVs for deltas and for the snapshot.
DEFAULT_MAX_KVS_PER_MESSAGE = 100
SNAPSHOT_KVS_PER_MESSAGE = 1000


@dataclass(slots=True)
class EncodeCounts:
    """Module-wide counters: how often values were gob-encoded (not how often they were sent).

    ``kv_batches`` counts calls of ``kvs_part`` (one per breadcrumb or snapshot chunk the
    server encodes); the encode-once test compares it with the number of breadcrumbs.
    """

    kv_batches: int = 0
    messages: int = 0
    snappy_compressions: int = 0


ENCODE_COUNTS = EncodeCounts()
_counts_lock = threading.Lock()


def _count(kv_batches: int = 0, messages: int = 0, snappy_compressions: int = 0) -> None:
    # Snapshot chunks may be encoded in worker threads.
    with _counts_lock:
        ENCODE_COUNTS.kv_batches += kv_batches
        ENCODE_COUNTS.messages += messages
        ENCODE_COUNTS.snappy_compressions += snappy_compressions


def count_snappy_compression() -> None:
    """For callers that compress shared bytes themselves (the server's gob codec)."""
    _count(snappy_compressions=1)


_ENVELOPE_HEAD = sint(ENVELOPE_ID) + b"\x01"


def _envelope(name: str, type_id: int, body: bytes) -> bytes:
    return message(
        _ENVELOPE_HEAD + string(name.encode()) + sint(type_id) + uint(len(body)) + body + b"\x00"
    )


def _struct(fields: Iterable[bytes | None]) -> bytes:
    """A struct body from its fields in order; None marks a zero field (omitted)."""
    out = []
    delta = 1
    for value in fields:
        if value is None:
            delta += 1
            continue
        out.append(uint(delta))
        out.append(value)
        delta = 1
    out.append(b"\x00")
    return b"".join(out)


def _str(s: str) -> bytes | None:
    return string(s.encode()) if s else None


def encode_server_hello(m: ServerHello) -> bytes:
    body = _struct(
        (
            _str(m.version),
            _str(m.syncer_type),
            b"\x01" if m.supports_node_resource_updates else None,
            uint(m.server_conn_id) if m.server_conn_id else None,
        )
    )
    return _envelope(NAME_SERVER_HELLO, SERVER_HELLO_ID, body)


def encode_decoder_restart(m: DecoderRestart) -> bytes:
    body = _struct((_str(m.message), _str(m.compression)))
    return _envelope(NAME_DECODER_RESTART, DECODER_RESTART_ID, body)


def encode_sync_status(status: int) -> bytes:
    body = _struct((uint(status) if status else None,))
    return _envelope(NAME_SYNC_STATUS, SYNC_STATUS_ID, body)


def encode_ping(timestamp: GoTime) -> bytes:
    raw = timestamp.to_binary()
    body = _struct((uint(len(raw)) + raw,))
    return _envelope(NAME_PING, PING_ID, body)


# A Revision travels as an interface holding a Go string: the name "string", its builtin
# type id, then the value's byte count and the value as a singleton (field delta 0).
_REVISION_HEAD = string(b"string") + sint(STRING)


def _update(u: SerializedUpdate) -> bytes:
    return encode_update_body(
        u.key.encode(),
        u.value,
        u.revision,
        u.v3_resource_version,
        u.update_type,
        u.ttl_nanos,
    )


def encode_update_body(
    key: bytes,
    value: bytes | None,
    revision: str | None,
    v3_resource_version: str,
    update_type: int,
    ttl_nanos: int = 0,
) -> bytes:
    """One SerializedUpdate's struct body from its fields (the server's hot path: one call
    per KV of every breadcrumb and snapshot a gob client gets, without a SerializedUpdate)."""
    out = []
    delta = 1
    if key:
        out.append(b"\x01" + uint(len(key)) + key)
    else:
        delta = 2
    if value:
        out.append(uint(delta) + uint(len(value)) + value)
        delta = 1
    else:
        delta += 1
    if revision is not None:
        single = b"\x00" + string(revision.encode())
        out.append(uint(delta) + _REVISION_HEAD + uint(len(single)) + single)
        delta = 1
    else:
        delta += 1
    if v3_resource_version:
        out.append(uint(delta) + string(v3_resource_version.encode()))
        delta = 1
    else:
        delta += 1
    if ttl_nanos:
        out.append(uint(delta) + sint(ttl_nanos))
        delta = 1
    else:
        delta += 1
    if update_type:
        out.append(uint(delta) + uint(update_type))
    out.append(b"\x00")
    return b"".join(out)


def encode_kvs(updates: Sequence[SerializedUpdate]) -> bytes:
    """One MsgKVs value message."""
    return encode_kvs_bodies(list(map(_update, updates)))


def encode_kvs_bodies(bodies: Sequence[bytes]) -> bytes:
    """One MsgKVs value message from its updates' struct bodies (``encode_update_body``)."""
    if not bodies:
        return _envelope(NAME_KVS, KVS_ID, b"\x00")
    return _envelope(NAME_KVS, KVS_ID, b"\x01" + uint(len(bodies)) + b"".join(bodies) + b"\x00")


class EncodedPart:
    """Bytes to be written, unchanged, to any number of gob connections.

    ``plain`` is a run of complete gob value messages; ``snappy`` is the same run as snappy
    data chunks (made on first use, once). Either is only valid after a preamble of the
    same kind, i.e. inside a stream the session started.
    """

    __slots__ = ("_snappy", "messages", "plain")

    def __init__(self, plain: bytes, messages: int) -> None:
        self.plain = plain
        self.messages = messages
        self._snappy: bytes | None = None

    @property
    def snappy(self) -> bytes:
        if self._snappy is None:
            packed = snappy.compress_chunks(self.plain)
            _count(snappy_compressions=1)
            if self._snappy is None:  # another thread may have won; keep one object
                self._snappy = packed
        return self._snappy

    def __repr__(self) -> str:
        return f"EncodedPart({len(self.plain)} bytes, {self.messages} messages)"


def kvs_part(
    updates: Sequence[SerializedUpdate], max_per_message: int = DEFAULT_MAX_KVS_PER_MESSAGE
) -> EncodedPart:
    """A breadcrumb's deltas or a snapshot chunk: MsgKVs of at most ``max_per_message`` KVs."""
    return kvs_part_bodies(list(map(_update, updates)), max_per_message)


def kvs_part_bodies(
    bodies: Sequence[bytes], max_per_message: int = DEFAULT_MAX_KVS_PER_MESSAGE
) -> EncodedPart:
    """``kvs_part`` from the updates' struct bodies (``encode_update_body``)."""
    if max_per_message < 1:
        raise ValueError("max_per_message must be at least 1")
    msgs = [
        encode_kvs_bodies(bodies[i : i + max_per_message])
        for i in range(0, len(bodies), max_per_message)
    ]
    _count(kv_batches=1, messages=len(msgs))
    return EncodedPart(b"".join(msgs), len(msgs))


def ping_part(timestamp: GoTime) -> EncodedPart:
    """A MsgPing, shareable by every connection pinged at the same tick."""
    return message_part(encode_ping(timestamp))


def message_part(plain_message: bytes) -> EncodedPart:
    _count(messages=1)
    return EncodedPart(plain_message, 1)


_STATUS_PARTS: dict[int, EncodedPart] = {}


def status_part(status: int) -> EncodedPart:
    """The shared MsgSyncStatus for ``status`` (a pure function: made once per process)."""
    part = _STATUS_PARTS.get(status)
    if part is None:
        part = _STATUS_PARTS.setdefault(status, message_part(encode_sync_status(status)))
    return part


SNAPSHOT_END = DecoderRestart("End of compressed snapshot.", "snappy")
_SNAPSHOT_END_PART = EncodedPart(encode_decoder_restart(SNAPSHOT_END), 1)


def snapshot_end_part() -> EncodedPart:
    """The DecoderRestart that ends a snappy snapshot stream (shared by every connection)."""
    return _SNAPSHOT_END_PART
