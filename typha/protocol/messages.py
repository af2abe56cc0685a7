"""Protocol messages: one small frozen class per message (see docs/protocol.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1

# Optional behaviours a peer advertises in its hello. A side never relies on a feature the
# other side did not advertise.
FEATURE_RESUME = "resume"  # client sends resume tokens; server may continue a stream
FEATURE_CATCHUP = "catchup"  # client understands conflated catch-up batches (KVs kind 2)
FEATURE_GOODBYE = "goodbye"  # client understands Goodbye (else the server just closes)
KNOWN_FEATURES = frozenset({FEATURE_RESUME, FEATURE_CATCHUP, FEATURE_GOODBYE})

COMPRESSION_ZSTD = "zstd"
KNOWN_COMPRESSIONS = frozenset({COMPRESSION_ZSTD})


class MsgType(enum.IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    SYNC_STATUS = 3
    KVS = 4
    BATCH_DONE = 5
    PING = 6
    PONG = 7
    GOODBYE = 8


class SyncStatus(enum.IntEnum):
    """Typha's upstream sync state for a syncer view (same numbering as Typha's)."""

    WAIT_FOR_DATASTORE = 0
    RESYNC = 1
    IN_SYNC = 2


class KVKind(enum.IntEnum):
    DELTA = 0  # an ordered batch of changes at one sequence number
    SNAPSHOT = 1  # part of a full snapshot; ends with BatchDone(kind=SNAPSHOT)
    CATCHUP = 2  # part of a conflated catch-up; ends with BatchDone(kind=CATCHUP)


@dataclass(frozen=True, slots=True)
class ResumeToken:
    """Where a client is: the server epoch it was talking to, the last sequence number it
    applied, and the datastore revision that corresponds to (None if the datastore has no
    global revision)."""

    epoch: int
    seq: int
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class ClientHello:
    node: str
    syncer: str = "felix"
    client_version: str = ""
    info: str = ""
    compressions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    resume: ResumeToken | None = None
    conn_id: int = 0
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class ServerHello:
    server_version: str
    epoch: int
    syncer: str
    compression: str | None = None
    features: tuple[str, ...] = ()
    conn_id: int = 0
    resumed: bool = False
    # For a resumed stream: the sequence number the client is at in this server's numbering
    # (it differs from the token's when the client resumed by revision on another replica).
    resume_seq: int | None = None
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class SyncStatusMsg:
    status: SyncStatus


@dataclass(frozen=True, slots=True)
class KVs:
    """A batch of key/value pairs. A value of ``None`` is a deletion."""

    kind: KVKind
    seq: int
    revision: int | None
    kvs: tuple[tuple[str, Any], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class BatchDone:
    """End of a snapshot or catch-up: the client is now at ``seq``/``revision``.

    ``total`` is the number of KVs the whole snapshot/catch-up carried (a checksum).
    """

    kind: KVKind
    seq: int
    revision: int | None
    total: int


@dataclass(frozen=True, slots=True)
class Ping:
    timestamp: int


@dataclass(frozen=True, slots=True)
class Pong:
    ping_timestamp: int
    seq: int  # last sequence number the client applied (-1: none yet)


@dataclass(frozen=True, slots=True)
class Goodbye:
    reason: str
    reconnect_delay: float | None = None
    address: str | None = None


Message = ClientHello | ServerHello | SyncStatusMsg | KVs | BatchDone | Ping | Pong | Goodbye
