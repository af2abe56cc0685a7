"""Calico Typha's messages (its syncproto package), as Python values.

Each message travels as the ``Message`` interface field of an ``Envelope`` struct, named by
the string it was registered under in Go (the pre-monorepo package path, kept for
compatibility). Field names and order below are the Go structs'; gob matches fields by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

_PKG = "github.com/projectcalico/typha/pkg/syncproto."
NAME_CLIENT_HELLO = _PKG + "MsgClientHello"
NAME_SERVER_HELLO = _PKG + "MsgServerHello"
NAME_DECODER_RESTART = _PKG + "MsgDecoderRestart"
NAME_ACK = _PKG + "MsgACK"
NAME_SYNC_STATUS = _PKG + "MsgSyncStatus"
NAME_PING = _PKG + "MsgPing"
NAME_PONG = _PKG + "MsgPong"
NAME_KVS = _PKG + "MsgKVs"

COMPRESSION_SNAPPY = "snappy"
SYNCER_TYPES = ("felix", "bgp", "tunnel-ip-allocation", "node-status")


class SyncStatus(IntEnum):
    """libcalico-go's api.SyncStatus (a uint8 on the wire)."""

    WAIT_FOR_DATASTORE = 0
    RESYNC_IN_PROGRESS = 1
    IN_SYNC = 2


class UpdateType(IntEnum):
    """libcalico-go's api.UpdateType (a uint8 on the wire)."""

    UNKNOWN = 0
    NEW = 1
    UPDATED = 2
    DELETED = 3


# Go's time.Time travels as its MarshalBinary bytes: version 1, seconds since 0001-01-01 UTC
# (int64), nanoseconds (int32), zone offset in minutes (int16, -1 = UTC); version 2 adds
# the offset's seconds (one byte). All big-endian.
_UNIX_TO_GO_SECONDS = 62_135_596_800
GO_ZERO_UNIX_NANOS = -_UNIX_TO_GO_SECONDS * 1_000_000_000  # Go's zero time, 0001-01-01 UTC
_TIME_V1 = 1
_TIME_V2 = 2


@dataclass(frozen=True, slots=True)
class GoTime:
    """A Go ``time.Time`` as Unix nanoseconds plus the zone offset it carried (seconds)."""

    unix_nanos: int
    offset_seconds: int | None = None  # None: UTC

    def to_binary(self) -> bytes:
        sec, nsec = divmod(self.unix_nanos, 1_000_000_000)
        sec += _UNIX_TO_GO_SECONDS
        if self.offset_seconds is None:
            offset_min, extra, version = -1, 0, _TIME_V1
        else:
            offset_min, extra = divmod(self.offset_seconds, 60)
            version = _TIME_V2 if extra else _TIME_V1
        out = (
            bytes((version,))
            + sec.to_bytes(8, "big", signed=True)
            + nsec.to_bytes(4, "big", signed=True)
            + offset_min.to_bytes(2, "big", signed=True)
        )
        return out + bytes((extra,)) if version == _TIME_V2 else out

    @classmethod
    def from_binary(cls, data: bytes) -> GoTime:
        if not data or data[0] not in (_TIME_V1, _TIME_V2):
            raise ValueError("time: unsupported binary version")
        want = 15 if data[0] == _TIME_V1 else 16
        if len(data) != want:
            raise ValueError("time: invalid binary length")
        sec = int.from_bytes(data[1:9], "big", signed=True) - _UNIX_TO_GO_SECONDS
        nsec = int.from_bytes(data[9:13], "big", signed=True)
        if not 0 <= nsec < 1_000_000_000:
            # Go's own encoder never writes this (its decoder would keep garbage).
            raise ValueError("time: nanoseconds out of range")
        offset_min = int.from_bytes(data[13:15], "big", signed=True)
        offset = None if offset_min == -1 else offset_min * 60
        if data[0] == _TIME_V2 and offset is not None:
            offset += data[15]
        return cls(sec * 1_000_000_000 + nsec, offset)


@dataclass(frozen=True, slots=True)
class ClientHello:
    hostname: str = ""
    info: str = ""
    version: str = ""
    syncer_type: str = ""
    supports_decoder_restart: bool = False
    supported_compression: tuple[str, ...] = ()
    supports_modern_policy_keys: bool = False
    client_conn_id: int = 0


@dataclass(frozen=True, slots=True)
class ServerHello:
    version: str = ""
    syncer_type: str = ""
    supports_node_resource_updates: bool = False
    server_conn_id: int = 0


@dataclass(frozen=True, slots=True)
class DecoderRestart:
    message: str = ""
    compression: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class SyncStatusMsg:
    status: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    timestamp: GoTime | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    ping_timestamp: GoTime | None = None
    pong_timestamp: GoTime | None = None


@dataclass(frozen=True, slots=True)
class SerializedUpdate:
    """One KV: ``value`` None is a deletion; ``revision`` is the datastore's, as a string."""

    key: str
    value: bytes | None = None
    revision: str | None = None
    v3_resource_version: str = ""
    ttl_nanos: int = 0
    update_type: int = UpdateType.UNKNOWN


@dataclass(frozen=True, slots=True)
class KVs:
    kvs: tuple[SerializedUpdate, ...] = ()


ServerMessage = ServerHello | DecoderRestart | SyncStatusMsg | Ping | KVs
ClientMessage = ClientHello | Ack | Pong
