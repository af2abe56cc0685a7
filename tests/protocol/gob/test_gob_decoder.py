"""The bounded decoder for client messages: Go's own encodings decode, everything else fails
cleanly (only ``ProtocolError``), with each bound shown to bite and not to bite."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typha.protocol.errors import FrameTooLarge, MalformedFrame, UnexpectedMessage
from typha.protocol.gob import Ack, ClientHello, GobDecoder, GoTime, Pong
from typha.protocol.gob.messages import GO_ZERO_UNIX_NANOS, NAME_CLIENT_HELLO, NAME_KVS
from typha.protocol.gob.types import INTERFACE, STRING, UINT, Kind, WireType, encode_definition
from typha.protocol.gob.wire import message, sint, string, uint

from .golike import GoLikeClientEncoder
from .oracle import ORACLE, Oracle
from .streams import hello

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_nanos = st.none() | st.integers(-(2**62), 2**62)

client_messages = st.one_of(
    st.builds(
        dict,
        type=st.just("MsgClientHello"),
        Hostname=_text,
        Info=_text,
        Version=_text,
        SyncerType=_text,
        SupportsDecoderRestart=st.booleans(),
        SupportedCompressionAlgorithms=st.lists(_text, max_size=3),
        SupportsModernPolicyKeys=st.booleans(),
        ClientConnID=st.integers(0, 2**64 - 1),
    ),
    st.builds(dict, type=st.just("MsgPong"), PingTimestamp=_nanos, PongTimestamp=_nanos),
    st.builds(dict, type=st.just("MsgACK")),
)


def _expected(m: dict) -> object:
    if m["type"] == "MsgACK":
        return Ack()
    if m["type"] == "MsgPong":
        # Go omits the zero time; we decode an absent time as None.
        t = [
            None if m[k] in (None, GO_ZERO_UNIX_NANOS) else GoTime(m[k])
            for k in ("PingTimestamp", "PongTimestamp")
        ]
        return Pong(*t)
    return ClientHello(
        m["Hostname"],
        m["Info"],
        m["Version"],
        m["SyncerType"],
        m["SupportsDecoderRestart"],
        tuple(m["SupportedCompressionAlgorithms"]),
        m["SupportsModernPolicyKeys"],
        m["ClientConnID"],
    )


def _decode_all(
    data: bytes, cuts: list[int], dec: GobDecoder | None = None, *, whole: bool = True
) -> list[object]:
    dec = dec or GobDecoder()
    out: list[object] = []
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        dec.feed(data[pos:cut])
        pos = max(pos, cut)
        while (m := dec.next_message()) is not None:
            out.append(m)
    if whole:
        assert dec.buffered == 0
    return out


@ORACLE
@given(st.lists(client_messages, min_size=1, max_size=6), st.lists(st.integers(0, 5000)))
def test_decodes_what_gos_encoder_writes(oracle: Oracle, msgs: list[dict], cuts) -> None:
    data, _ = oracle.encode_client(msgs)
    assert _decode_all(data, [c % (len(data) + 1) for c in cuts]) == [_expected(m) for m in msgs]


def test_an_explicit_zero_time_decodes_as_absent_like_in_go(oracle: Oracle) -> None:
    """Go omits the zero time; a stream that sends it anyway means the same to Go and to us."""
    enc = GoLikeClientEncoder()
    zero = GoTime(GO_ZERO_UNIX_NANOS)
    data = enc.encode(hello()) + enc.encode(Pong(zero, GoTime(GO_ZERO_UNIX_NANOS + 1)))
    assert _decode_all(data, [])[1] == Pong(None, GoTime(GO_ZERO_UNIX_NANOS + 1))
    go = oracle.decode_client(data)
    assert go["ok"] and go["messages"][1]["PingTimestamp"] is None
    assert go["messages"][1]["PongTimestamp"] == [0, 1]  # seconds since year 1, nanoseconds


def test_go_stream_byte_by_byte_yields_each_message_exactly_at_its_end(oracle: Oracle) -> None:
    msgs = [
        {"type": "MsgClientHello", "Hostname": "h", "SyncerType": "bgp", "ClientConnID": 5},
        {"type": "MsgACK"},
        {"type": "MsgPong", "PingTimestamp": 1_700_000_000_000_000_001},
        {"type": "MsgACK"},
    ]
    data, ends = oracle.encode_client(msgs)
    dec = GobDecoder()
    seen = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        if dec.next_message() is not None:
            seen.append(i + 1)
            assert dec.next_message() is None
    assert seen == ends


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(
    st.permutations(range(64, 200)).map(lambda p: p[:6]),
    st.lists(st.sampled_from(["hello", "pong", "ack"]), min_size=1, max_size=5),
)
def test_any_type_ids_in_any_order(ids: list[int], kinds: list[str]) -> None:
    names = ["Envelope", "hello", "algs", "pong", "time", "ack"]
    enc = GoLikeClientEncoder(dict(zip(names, ids, strict=True)))
    msgs = {"hello": hello(), "pong": Pong(GoTime(5), GoTime(6)), "ack": Ack()}
    data = b"".join(enc.encode(msgs[k]) for k in kinds)
    assert _decode_all(data, []) == [msgs[k] for k in kinds]


# --- bounds: each refused, with the limit-abiding case beside it ---------------------------


def _hello_bytes(**kw) -> bytes:
    return GoLikeClientEncoder().encode(hello(**kw))


def test_string_length_is_capped() -> None:
    assert _decode_all(_hello_bytes(hostname="x" * 4096), []) == [hello(hostname="x" * 4096)]
    with pytest.raises(MalformedFrame, match="limit"):
        _decode_all(_hello_bytes(hostname="x" * 4097), [])


def test_message_size_is_capped_before_the_bytes_arrive() -> None:
    dec = GobDecoder(max_message=1 << 20)
    dec.feed(uint((1 << 20) - 10) + b"\xff")  # a message that would fit: wait for it
    assert dec.next_message() is None
    dec = GobDecoder(max_message=1 << 20)
    dec.feed(uint((1 << 20) + 1))  # declared over 1 MiB: refused at once
    with pytest.raises(FrameTooLarge):
        dec.next_message()


def test_a_whole_envelope_with_its_definitions_counts_against_the_cap() -> None:
    data = _hello_bytes(hostname="x" * 3000)
    assert _decode_all(data, [], GobDecoder(max_message=len(data)))
    with pytest.raises(FrameTooLarge):
        _decode_all(data, [], GobDecoder(max_message=len(data) - 1))


def _definitions(n: int, first: int = 100) -> bytes:
    return b"".join(
        message(encode_definition(WireType(Kind.SLICE, "", first + i, elem=STRING)))
        for i in range(n)
    )


def test_messages_per_envelope_are_capped() -> None:
    base = _hello_bytes()  # 4 gob messages
    assert _decode_all(_definitions(12) + base, [])  # 16
    with pytest.raises(MalformedFrame, match="spans more than 16"):
        _decode_all(_definitions(13) + base, [])


def test_type_definitions_are_capped() -> None:
    # Definitions in Envelopes of their own (an ACK each), 64 in all on the connection.
    enc = GoLikeClientEncoder()
    data = enc.encode(hello()) + enc.encode(Ack())  # defines 4 types
    for i in range(6):
        data += _definitions(10, 100 + 10 * i) + enc.encode(Ack())
    assert len(_decode_all(data, [])) == 8
    with pytest.raises(MalformedFrame, match="type definitions"):
        _decode_all(data + _definitions(1, 99) + enc.encode(Ack()), [])


def test_nesting_is_capped() -> None:
    def nested_hello(depth: int) -> bytes:
        # MsgClientHello with an extra field: a slice of slices ... of strings, `depth` deep.
        defs = []
        elem = STRING
        for i in range(depth):
            defs.append(WireType(Kind.SLICE, "", 150 + i, elem=elem))
            elem = 150 + i
        # Slices of one element each; innermost one string "a".
        value = b"\x01" * depth + string(b"a")
        h = WireType(Kind.STRUCT, "MsgClientHello", 140, fields=(("Extra", elem), ("Info", STRING)))
        env = WireType(Kind.STRUCT, "Envelope", 141, fields=(("Message", INTERFACE),))
        body = b"\x01" + value + b"\x00"
        return b"".join(message(encode_definition(t)) for t in [*defs, h, env]) + message(
            sint(141)
            + b"\x01"
            + string(NAME_CLIENT_HELLO.encode())
            + sint(140)
            + uint(len(body))
            + body
            + b"\x00"
        )

    assert _decode_all(nested_hello(6), []) == [ClientHello()]  # unknown field: ignored
    with pytest.raises(MalformedFrame, match="nested"):
        _decode_all(nested_hello(8), [])


def _envelope_with(name: str, type_id: int, body: bytes, defs: list[WireType]) -> bytes:
    env = WireType(Kind.STRUCT, "Envelope", 64, fields=(("Message", INTERFACE),))
    return b"".join(message(encode_definition(t)) for t in [env, *defs]) + message(
        sint(64)
        + b"\x01"
        + string(name.encode())
        + sint(type_id)
        + uint(len(body))
        + body
        + b"\x00"
    )


def test_only_hello_pong_and_ack_are_accepted() -> None:
    kvs = WireType(Kind.STRUCT, "MsgKVs", 70, fields=())
    with pytest.raises(UnexpectedMessage, match="MsgKVs"):
        _decode_all(_envelope_with(NAME_KVS, 70, b"\x00", [kvs]), [])
    hello_t = WireType(Kind.STRUCT, "MsgClientHello", 70, fields=(("Info", STRING),))
    assert _decode_all(_envelope_with(NAME_CLIENT_HELLO, 70, b"\x00", [hello_t]), []) == [
        ClientHello()
    ]
    # As in Go: a struct sharing no field with the message is a mismatch.
    other = WireType(Kind.STRUCT, "MsgClientHello", 70, fields=(("Nope", STRING),))
    with pytest.raises(UnexpectedMessage, match="no fields"):
        _decode_all(_envelope_with(NAME_CLIENT_HELLO, 70, b"\x00", [other]), [])


def test_nil_message_and_foreign_top_level_values_are_refused() -> None:
    env = WireType(Kind.STRUCT, "Envelope", 64, fields=(("Message", INTERFACE),))
    nil = message(encode_definition(env)) + message(sint(64) + b"\x01\x00\x00")
    with pytest.raises(UnexpectedMessage, match="nil"):
        _decode_all(nil, [])
    other = WireType(Kind.STRUCT, "Other", 64, fields=(("X", UINT),))
    with pytest.raises(UnexpectedMessage, match="Envelope"):
        _decode_all(message(encode_definition(other)) + message(sint(64) + b"\x01\x05\x00"), [])


def test_interfaces_inside_the_message_are_refused() -> None:
    t = WireType(
        Kind.STRUCT, "MsgClientHello", 70, fields=(("Sneaky", INTERFACE), ("Info", STRING))
    )
    body = b"\x01" + string(b"string") + sint(STRING) + b"\x03\x00\x01a" + b"\x00"
    with pytest.raises(UnexpectedMessage, match="interface"):
        _decode_all(_envelope_with(NAME_CLIENT_HELLO, 70, body, [t]), [])


def test_incompatible_field_types_are_refused() -> None:
    ok = WireType(Kind.STRUCT, "MsgClientHello", 70, fields=(("ClientConnID", UINT),))
    assert _decode_all(_envelope_with(NAME_CLIENT_HELLO, 70, b"\x01\x05\x00", [ok]), []) == [
        ClientHello(client_conn_id=5)
    ]
    bad = WireType(Kind.STRUCT, "MsgClientHello", 70, fields=(("Hostname", UINT),))
    with pytest.raises(UnexpectedMessage, match="Hostname"):
        _decode_all(_envelope_with(NAME_CLIENT_HELLO, 70, b"\x01\x05\x00", [bad]), [])


def test_reserved_and_duplicate_type_ids_are_refused() -> None:
    t = WireType(Kind.SLICE, "", 63, elem=STRING)
    with pytest.raises(MalformedFrame, match="reserved"):
        _decode_all(message(encode_definition(t)) + _hello_bytes(), [])
    twice = _definitions(1) + _definitions(1)
    with pytest.raises(MalformedFrame, match="already defined"):
        _decode_all(twice + _hello_bytes(), [])
    assert _decode_all(_definitions(1) + _hello_bytes(), [])  # positive control


def test_garbage_after_the_envelope_is_refused() -> None:
    assert _decode_all(_append_to_last_message(_hello_bytes(), b""), []) == [hello()]
    with pytest.raises(MalformedFrame, match="extra data"):
        _decode_all(_append_to_last_message(_hello_bytes(), b"\x07"), [])


def _append_to_last_message(data: bytes, extra: bytes) -> bytes:
    # Walk the messages, then rewrite the last one with `extra` appended.
    from typha.protocol.gob.wire import read_uint_prefix

    pos, last = 0, 0
    while pos < len(data):
        n, start = read_uint_prefix(data, pos)
        last, pos = pos, start + n
    n, start = read_uint_prefix(data, last)
    return data[:last] + message(data[start : start + n] + extra)
