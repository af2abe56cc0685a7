"""gob primitives, type definitions, Go times, snappy framing and the first-byte rule.

Byte-exact against the examples in Go's encoding/gob documentation (doc.go); the snappy
framing is checked against cramjam's own framed decoder (an independent implementation).
"""

from __future__ import annotations

import random

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typha.protocol import frame
from typha.protocol.errors import MalformedFrame
from typha.protocol.gob import PREAMBLE, SNAPPY_PREAMBLE, GoTime, sniff
from typha.protocol.gob import snappy as gsnappy
from typha.protocol.gob.encoder import PREAMBLE_TYPES
from typha.protocol.gob.types import INT, Kind, WireType, decode_definition, encode_definition
from typha.protocol.gob.wire import Reader, flt, message, read_uint_prefix, sint, uint

# Deterministic in `make test`, like the project's other property tests.
PROPS = settings(max_examples=200, derandomize=True, deadline=None, database=None)


def test_primitives_match_the_gob_documentation() -> None:
    assert uint(0) == b"\x00"
    assert uint(7) == b"\x07"
    assert uint(256) == bytes.fromhex("fe0100")
    assert sint(-129) == bytes.fromhex("fe0101")
    assert flt(17.0) == bytes.fromhex("fe3140")
    assert sint(-65) == bytes.fromhex("ff81")
    assert sint(65) == bytes.fromhex("ff82")


@PROPS
@given(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False))
def test_primitives_round_trip(u: int, i: int, f: float) -> None:
    r = Reader(uint(u) + sint(i) + flt(f))
    assert (r.uint(), r.sint(), r.flt()) == (u, i, f)
    assert r.remaining == 0


def test_point_example_from_the_gob_documentation() -> None:
    # type Point struct {X, Y int}; Point{22, 33} on a fresh encoder (doc.go).
    expected = bytes.fromhex(
        "1fff810301010550 6f696e7401ff8200 0102010158010400 010159010400 0000"
        "07ff82012c014200".replace(" ", "")
    )
    point = WireType(Kind.STRUCT, "Point", 65, fields=(("X", INT), ("Y", INT)))
    value = message(sint(65) + b"\x01" + sint(22) + b"\x01" + sint(33) + b"\x00")
    assert message(encode_definition(point)) + value == expected
    r = Reader(expected, 1, 1 + expected[0])
    assert -r.sint() == 65
    assert decode_definition(r, 65) == point


def test_preamble_defines_each_type_once_in_its_own_message() -> None:
    pos, seen = 0, []
    while pos < len(PREAMBLE):
        n, start = read_uint_prefix(PREAMBLE, pos)
        r = Reader(PREAMBLE, start, start + n)
        type_id = -r.sint()
        seen.append(decode_definition(r, type_id))
        assert r.remaining == 0
        pos = start + n
    assert tuple(seen) == PREAMBLE_TYPES
    assert len({t.id for t in seen}) == len(seen)


@PROPS
@given(st.integers(-(2**62), 2**62), st.sampled_from([None, 0, 3600, -7200, 19800, 45]))
def test_go_time_round_trips(nanos: int, offset: int | None) -> None:
    t = GoTime(nanos, offset)
    raw = t.to_binary()
    assert len(raw) == (16 if offset is not None and offset % 60 else 15)
    assert GoTime.from_binary(raw) == t


def test_go_time_layout() -> None:
    # 1970-01-01T00:00:01.5Z: seconds since year 1 = 62135596801, UTC offset -1.
    raw = GoTime(1_500_000_000).to_binary()
    assert (
        raw
        == bytes([1])
        + (62135596801).to_bytes(8, "big")
        + (500_000_000).to_bytes(4, "big")
        + b"\xff\xff"
    )
    with pytest.raises(ValueError):
        GoTime.from_binary(b"\x03" + raw[1:])
    with pytest.raises(ValueError, match="nanoseconds"):
        GoTime.from_binary(raw[:9] + (10**9).to_bytes(4, "big") + raw[13:])


@settings(max_examples=50, derandomize=True, deadline=None, database=None)
@given(st.lists(st.binary(max_size=70000), max_size=4))
def test_snappy_chunks_splice_into_one_stream_cramjam_reads(parts: list[bytes]) -> None:
    stream = gsnappy.STREAM_IDENTIFIER + b"".join(gsnappy.compress_chunks(p) for p in parts)
    assert bytes(cramjam.snappy.decompress(stream)) == b"".join(parts)
    assert gsnappy.decompress_stream(stream, max_size=1 << 20) == b"".join(parts)
    # Concatenated whole streams (identifier repeated) are one valid stream too.
    again = stream + stream
    assert bytes(cramjam.snappy.decompress(again)) == b"".join(parts) * 2


def test_snappy_incompressible_block_is_stored() -> None:
    data = random.Random(3).randbytes(5000)
    chunks = gsnappy.compress_chunks(data)
    assert chunks[0] == 0x01  # stored, like Go's writer does when compression does not pay
    assert bytes(cramjam.snappy.decompress(gsnappy.STREAM_IDENTIFIER + chunks)) == data
    assert gsnappy.compress_chunks(b"a" * 5000)[0] == 0x00  # positive control: compressed


def test_snappy_checksum_is_verified() -> None:
    stream = bytearray(gsnappy.STREAM_IDENTIFIER + gsnappy.compress_chunks(b"hello" * 100))
    stream[len(gsnappy.STREAM_IDENTIFIER) + 5] ^= 1  # a CRC byte
    with pytest.raises(MalformedFrame):
        gsnappy.decompress_stream(bytes(stream), max_size=1 << 20)


def test_snappy_preamble_is_the_plain_preamble_compressed() -> None:
    assert gsnappy.decompress_stream(SNAPPY_PREAMBLE, max_size=1 << 20) == PREAMBLE


def test_sniff_tells_msgpack_from_gob() -> None:
    assert sniff(b"") is None
    assert sniff(frame(b"\x91\x01")) == "msgpack"
    assert sniff(frame(b"x" * ((1 << 20) - 1))) == "msgpack"  # the largest client frame
    assert sniff(PREAMBLE) == "gob"
    assert sniff(message(b"x" * 200)) == "gob"  # two-byte count: 0xFF
    assert sniff(message(b"x" * 70000)) == "gob"  # three-byte count: 0xFD
    assert sniff(b"\x16\x03\x01") == "gob"  # (TLS is told apart before this rule applies)
    assert sniff(bytes([0x80])) is None
    assert sniff(bytes([0xFC])) is None  # a gob count of 2**24 or more: over any cap


@PROPS
@given(st.integers(1, (1 << 20)))
def test_every_gob_message_up_to_the_cap_starts_with_a_gob_byte(n: int) -> None:
    assert sniff(uint(n)) == "gob"


@PROPS
@given(st.integers(0, (16 << 20) - 1))
def test_every_frame_under_16_mib_starts_with_zero(n: int) -> None:
    assert n.to_bytes(4, "big")[0] == 0
    assert sniff(n.to_bytes(4, "big") + b"\x00") == "msgpack"
