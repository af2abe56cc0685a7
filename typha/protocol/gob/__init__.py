"""Calico Typha's own wire protocol (Go gob, optional snappy), sans-IO, server side.

See docs/protocol.md, "Calico's protocol". The pieces:

* ``encoder``: a fixed type preamble after every stream (re)start, then value messages that
  are pure functions of their content, so each is encoded (and snappy-compressed) once and
  shared by every connection (``EncodedPart``; ``ENCODE_COUNTS`` proves it);
* ``decoder``: a bounded decoder for what a client may send (hello, pong, ACK);
* ``session``: one connection's handshake, decoder restarts and streaming, bytes in and out;
* ``sniff``: tells our msgpack frames from gob by the first byte.
"""

from .decoder import GobDecoder
from .encoder import (
    DEFAULT_MAX_KVS_PER_MESSAGE,
    ENCODE_COUNTS,
    PREAMBLE,
    SNAPPY_PREAMBLE,
    SNAPSHOT_KVS_PER_MESSAGE,
    EncodedPart,
    encode_update_body,
    kvs_part,
    kvs_part_bodies,
    message_part,
    ping_part,
    status_part,
)
from .messages import (
    COMPRESSION_SNAPPY,
    SYNCER_TYPES,
    Ack,
    ClientHello,
    DecoderRestart,
    GoTime,
    KVs,
    Ping,
    Pong,
    SerializedUpdate,
    ServerHello,
    SyncStatus,
    SyncStatusMsg,
    UpdateType,
)
from .session import (
    GobServerSession,
    HelloAccepted,
    PongReceived,
    SnapshotReady,
    State,
    StreamingReady,
)
from .sniff import sniff

__all__ = [
    "COMPRESSION_SNAPPY",
    "DEFAULT_MAX_KVS_PER_MESSAGE",
    "ENCODE_COUNTS",
    "PREAMBLE",
    "SNAPPY_PREAMBLE",
    "SNAPSHOT_KVS_PER_MESSAGE",
    "SYNCER_TYPES",
    "Ack",
    "ClientHello",
    "DecoderRestart",
    "EncodedPart",
    "GoTime",
    "GobDecoder",
    "GobServerSession",
    "HelloAccepted",
    "KVs",
    "Ping",
    "Pong",
    "PongReceived",
    "SerializedUpdate",
    "ServerHello",
    "SnapshotReady",
    "State",
    "StreamingReady",
    "SyncStatus",
    "SyncStatusMsg",
    "UpdateType",
    "encode_update_body",
    "kvs_part",
    "kvs_part_bodies",
    "message_part",
    "ping_part",
    "sniff",
    "status_part",
]
