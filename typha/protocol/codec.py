"""Messages ↔ msgpack payloads (the body of a frame), with strict validation on decode.

Every payload is a msgpack array whose first element is the message type. Hellos carry a map
so that fields can be added without breaking older peers (unknown map keys are ignored).
Decoding never raises anything but :class:`MalformedFrame`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import MalformedFrame
from .hello_limits import check_hello_strings
from .messages import (
    BatchDone,
    ClientHello,
    Goodbye,
    KVKind,
    KVs,
    Message,
    MsgType,
    Ping,
    Pong,
    ResumeToken,
    ServerHello,
    SyncStatus,
    SyncStatusMsg,
)

_MAX_INT = 2**63 - 1
_MIN_INT = -(2**63)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items (to build arrays from pre-encoded items)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


# --- Encoding ------------------------------------------------------------------------------------


def encode_kv(key: str, value_bytes: bytes) -> bytes:
    """One pre-encoded KV (``[key, value]``) from the key and the already-packed value."""
    return b"\x92" + pack(key) + value_bytes


PACKED_NIL = b"\xc0"


def encode_kvs_payload(
    kind: KVKind, seq: int, revision: int | None, encoded_kvs: list[bytes]
) -> bytes:
    """A KVs payload from KVs that were each encoded once (see :func:`encode_kv`)."""
    n = len(encoded_kvs)
    return b"".join(
        (
            b"\x96",
            pack(int(MsgType.KVS)),
            pack(int(kind)),
            pack(seq),
            pack(revision),
            pack(n),
            array_header(n),
            *encoded_kvs,
        )
    )


def encode_payload(msg: Message) -> bytes:
    """Encode any message (used for control messages and tests; the hot path pre-encodes)."""
    match msg:
        case ClientHello():
            body: dict[str, Any] = {
                "protocol": msg.protocol,
                "node": msg.node,
                "syncer": msg.syncer,
                "version": msg.client_version,
                "info": msg.info,
                "compression": list(msg.compressions),
                "features": list(msg.features),
                "conn_id": msg.conn_id,
                "resume": (
                    None
                    if msg.resume is None
                    else [msg.resume.epoch, msg.resume.seq, msg.resume.revision]
                ),
            }
            return pack([int(MsgType.CLIENT_HELLO), body])
        case ServerHello():
            body = {
                "protocol": msg.protocol,
                "version": msg.server_version,
                "epoch": msg.epoch,
                "syncer": msg.syncer,
                "compression": msg.compression,
                "features": list(msg.features),
                "conn_id": msg.conn_id,
                "resumed": msg.resumed,
                "resume_seq": msg.resume_seq,
            }
            return pack([int(MsgType.SERVER_HELLO), body])
        case SyncStatusMsg():
            return pack([int(MsgType.SYNC_STATUS), int(msg.status)])
        case KVs():
            return encode_kvs_payload(
                msg.kind, msg.seq, msg.revision, [b"\x92" + pack(k) + pack(v) for k, v in msg.kvs]
            )
        case BatchDone():
            return pack([int(MsgType.BATCH_DONE), int(msg.kind), msg.seq, msg.revision, msg.total])
        case Ping():
            return pack([int(MsgType.PING), msg.timestamp])
        case Pong():
            return pack([int(MsgType.PONG), msg.ping_timestamp, msg.seq])
        case Goodbye():
            return pack([int(MsgType.GOODBYE), msg.reason, msg.reconnect_delay, msg.address])
    raise TypeError(f"not a protocol message: {msg!r}")


# --- Decoding ------------------------------------------------------------------------------------


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise MalformedFrame(f"{what} must be an integer, got {type(v).__name__}")
    return v


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise MalformedFrame(f"{what} must be a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any, what: str) -> str | None:
    return None if v is None else _str(v, what)


def _str_tuple(v: Any, what: str) -> tuple[str, ...]:
    if type(v) is not list:
        raise MalformedFrame(f"{what} must be a list of strings")
    return tuple(_str(x, what) for x in v)


def _map(v: Any, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise MalformedFrame(f"{what} must be a map")
    return v


def _fields(arr: list[Any], n: int, name: str) -> list[Any]:
    if len(arr) != n:
        raise MalformedFrame(f"{name} must have {n} fields, got {len(arr)}")
    return arr


def _decode_client_hello(arr: list[Any]) -> ClientHello:
    m = _map(_fields(arr, 2, "ClientHello")[1], "ClientHello body")
    resume = m.get("resume")
    token = None
    if resume is not None:
        if type(resume) is not list or len(resume) != 3:
            raise MalformedFrame("resume token must be [epoch, seq, revision]")
        token = ResumeToken(
            _int(resume[0], "resume epoch"),
            _int(resume[1], "resume seq"),
            _opt_int(resume[2], "resume revision"),
        )
    hello = ClientHello(
        node=_str(m.get("node", ""), "node"),
        syncer=_str(m.get("syncer") or "felix", "syncer"),
        client_version=_str(m.get("version", ""), "version"),
        info=_str(m.get("info", ""), "info"),
        compressions=_str_tuple(m.get("compression", []), "compression"),
        features=_str_tuple(m.get("features", []), "features"),
        resume=token,
        conn_id=_int(m.get("conn_id", 0), "conn_id"),
        protocol=_int(m.get("protocol", 1), "protocol"),
    )
    check_hello_strings(
        (
            ("node", hello.node),
            ("syncer", hello.syncer),
            ("version", hello.client_version),
            ("info", hello.info),
        ),
        (("compression", hello.compressions), ("features", hello.features)),
        error=MalformedFrame,
    )
    return hello


def _decode_server_hello(arr: list[Any]) -> ServerHello:
    m = _map(_fields(arr, 2, "ServerHello")[1], "ServerHello body")
    resumed = m.get("resumed", False)
    if type(resumed) is not bool:
        raise MalformedFrame("resumed must be a boolean")
    return ServerHello(
        server_version=_str(m.get("version", ""), "version"),
        epoch=_int(m.get("epoch", 0), "epoch"),
        syncer=_str(m.get("syncer", ""), "syncer"),
        compression=_opt_str(m.get("compression"), "compression"),
        features=_str_tuple(m.get("features", []), "features"),
        conn_id=_int(m.get("conn_id", 0), "conn_id"),
        resumed=resumed,
        resume_seq=_opt_int(m.get("resume_seq"), "resume_seq"),
        protocol=_int(m.get("protocol", 1), "protocol"),
    )


def _kind(v: Any) -> KVKind:
    try:
        return KVKind(_int(v, "kind"))
    except ValueError:
        raise MalformedFrame(f"unknown KVs kind {v}") from None


def _decode_kvs(arr: list[Any]) -> KVs:
    _, kind, seq, rev, count, kvs = _fields(arr, 6, "KVs")
    count = _int(count, "count")
    if type(kvs) is not list or len(kvs) != count:
        raise MalformedFrame("KVs count does not match the number of KVs")
    out = []
    for kv in kvs:
        if type(kv) is not list or len(kv) != 2 or type(kv[0]) is not str:
            raise MalformedFrame("each KV must be [key: str, value]")
        out.append((kv[0], kv[1]))
    return KVs(_kind(kind), _int(seq, "seq"), _opt_int(rev, "revision"), tuple(out))


def _decode_status(arr: list[Any]) -> SyncStatusMsg:
    v = _int(_fields(arr, 2, "SyncStatus")[1], "status")
    try:
        return SyncStatusMsg(SyncStatus(v))
    except ValueError:
        raise MalformedFrame(f"unknown sync status {v}") from None


def _decode_done(arr: list[Any]) -> BatchDone:
    _, kind, seq, rev, total = _fields(arr, 5, "BatchDone")
    k = _kind(kind)
    if k is KVKind.DELTA:
        raise MalformedFrame("BatchDone kind must be snapshot or catch-up")
    return BatchDone(k, _int(seq, "seq"), _opt_int(rev, "revision"), _int(total, "total"))


def _decode_goodbye(arr: list[Any]) -> Goodbye:
    _, reason, delay, addr = _fields(arr, 4, "Goodbye")
    if delay is not None and type(delay) not in (int, float):
        raise MalformedFrame("reconnect delay must be a number")
    if delay is not None and not (0 <= delay < 86400):
        raise MalformedFrame("reconnect delay out of range")
    return Goodbye(
        _str(reason, "reason"), None if delay is None else float(delay), _opt_str(addr, "address")
    )


_DECODERS = {
    MsgType.CLIENT_HELLO: _decode_client_hello,
    MsgType.SERVER_HELLO: _decode_server_hello,
    MsgType.SYNC_STATUS: _decode_status,
    MsgType.KVS: _decode_kvs,
    MsgType.BATCH_DONE: _decode_done,
    MsgType.PING: lambda a: Ping(_int(_fields(a, 2, "Ping")[1], "timestamp")),
    MsgType.PONG: lambda a: Pong(
        _int(_fields(a, 3, "Pong")[1], "ping timestamp"), _int(a[2], "seq")
    ),
    MsgType.GOODBYE: _decode_goodbye,
}


def decode_payload(payload: bytes) -> Message:
    """Decode one frame body. Raises :class:`MalformedFrame` on anything invalid."""
    try:
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, ...)
        raise MalformedFrame(f"invalid msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or not obj:
        raise MalformedFrame("a message must be a non-empty array")
    try:
        mtype = MsgType(_int(obj[0], "message type"))
    except ValueError:
        raise MalformedFrame(f"unknown message type {obj[0]}") from None
    return _DECODERS[mtype](obj)
