"""Client streams written the way Go's gob encoder writes them (lazy type definitions).

Go defines a type the first time a value needs it, *inside* that value: the definition of
an interface's concrete type follows its name in the same message, further definitions come
in messages of their own, then the concrete type id and the value. Type ids are Go's
process-wide ones, so any id >= 64 may appear in any order. The Go oracle checks real Go
output; this module makes such streams without Go (unit tests, fuzz seeds), with ids chosen
by the caller.
"""

from __future__ import annotations

from typha.protocol.gob.messages import (
    NAME_ACK,
    NAME_CLIENT_HELLO,
    NAME_PONG,
    Ack,
    ClientHello,
    ClientMessage,
    Pong,
)
from typha.protocol.gob.types import BOOL, INTERFACE, STRING, UINT, Kind, WireType
from typha.protocol.gob.types import encode_definition as define
from typha.protocol.gob.wire import message, sint, string, uint


class GoLikeClientEncoder:
    def __init__(self, ids: dict[str, int] | None = None) -> None:
        # Default ids: Go's order of first use in Calico's client.
        self.ids = ids or {
            "Envelope": 65,
            "hello": 66,
            "algs": 67,
            "pong": 68,
            "time": 69,
            "ack": 70,
        }
        self.sent: set[str] = set()

    def _types(self) -> dict[str, WireType]:
        i = self.ids
        return {
            "Envelope": WireType(
                Kind.STRUCT, "Envelope", i["Envelope"], fields=(("Message", INTERFACE),)
            ),
            "hello": WireType(
                Kind.STRUCT,
                "MsgClientHello",
                i["hello"],
                fields=(
                    ("Hostname", STRING),
                    ("Info", STRING),
                    ("Version", STRING),
                    ("SyncerType", STRING),
                    ("SupportsDecoderRestart", BOOL),
                    ("SupportedCompressionAlgorithms", i["algs"]),
                    ("SupportsModernPolicyKeys", BOOL),
                    ("ClientConnID", UINT),
                ),
            ),
            "algs": WireType(
                Kind.SLICE, "[]syncproto.CompressionAlgorithm", i["algs"], elem=STRING
            ),
            "pong": WireType(
                Kind.STRUCT,
                "MsgPong",
                i["pong"],
                fields=(("PingTimestamp", i["time"]), ("PongTimestamp", i["time"])),
            ),
            "time": WireType(Kind.GOB_ENCODER, "Time", i["time"]),
            "ack": WireType(Kind.STRUCT, "MsgACK", i["ack"]),
        }

    def encode(self, msg: ClientMessage) -> bytes:
        types = self._types()
        out = b""
        if "Envelope" not in self.sent:
            out += message(define(types["Envelope"]))
            self.sent.add("Envelope")
        if isinstance(msg, ClientHello):
            name, key, inner, body = NAME_CLIENT_HELLO, "hello", ["algs"], _hello(msg)
        elif isinstance(msg, Pong):
            name, key, inner, body = NAME_PONG, "pong", ["time"], _pong(msg)
        elif isinstance(msg, Ack):
            name, key, inner, body = NAME_ACK, "ack", [], b"\x00"
        else:
            raise TypeError(msg)
        head = sint(self.ids["Envelope"]) + b"\x01" + string(name.encode())
        if key not in self.sent:
            self.sent.add(key)
            out += message(head + define(types[key]))
            for k in inner:
                if k not in self.sent:
                    self.sent.add(k)
                    out += message(define(types[k]))
            head = b""
        tail = sint(self.ids[key]) + uint(len(body)) + body + b"\x00"
        return out + message(head + tail)


def _fields(values: list[bytes | None]) -> bytes:
    out, delta = b"", 1
    for v in values:
        if v is None:
            delta += 1
            continue
        out += uint(delta) + v
        delta = 1
    return out + b"\x00"


def _s(s: str) -> bytes | None:
    return string(s.encode()) if s else None


def _hello(h: ClientHello) -> bytes:
    algs = None
    if h.supported_compression:
        algs = uint(len(h.supported_compression)) + b"".join(
            string(a.encode()) for a in h.supported_compression
        )
    return _fields(
        [
            _s(h.hostname),
            _s(h.info),
            _s(h.version),
            _s(h.syncer_type),
            b"\x01" if h.supports_decoder_restart else None,
            algs,
            b"\x01" if h.supports_modern_policy_keys else None,
            uint(h.client_conn_id) if h.client_conn_id else None,
        ]
    )


def _pong(p: Pong) -> bytes:
    def t(x):
        if x is None:
            return None
        raw = x.to_binary()
        return uint(len(raw)) + raw

    return _fields([t(p.ping_timestamp), t(p.pong_timestamp)])


def gob_client_streams() -> list[bytes]:
    """Whole client streams as Calico's client writes them (fuzz seeds): snappy and plain."""
    from typha.protocol.gob import GoTime

    from .streams import hello

    out = []
    for snappy in (True, False):
        enc = GoLikeClientEncoder()
        data = enc.encode(hello(snappy))
        if snappy:
            data += enc.encode(Ack()) + enc.encode(Ack())
        data += enc.encode(Pong(GoTime(1_700_000_000_000_000_000))) + enc.encode(Pong(GoTime(5)))
        out.append(data)
    return out
