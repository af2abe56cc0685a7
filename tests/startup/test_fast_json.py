"""orjson where it gives json's answer, json where it does not (typha.jsonlimit, gob_codec)."""

from __future__ import annotations

import json

import msgpack
import pytest

from typha import jsonlimit
from typha.server.gob_codec import go_value_bytes, may_hold_floats, serialized_update

ALL_BMP = "".join(chr(i) for i in range(0x3000)) + "\U0001f600"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, 2, {"b": null}], "c": "x\\u00e9", "d": true, "e": -0, "f": 1.5e300}',
        b'{"dup": 1, "dup": 2}',  # last wins, as in json
        b"NaN",  # json accepts it, orjson refuses: json's answer
        b'{"big": 123456789012345678901234567890}',  # beyond 64 bits: json's int
        b'"\\ud800"',  # lone surrogate: json keeps it
        '{"x": 1}'.encode("utf-16"),  # json detects UTF-16, orjson refuses
        json.dumps({"s": ALL_BMP}).encode(),
    ],
)
def test_fast_loads_gives_json_answer(raw: bytes) -> None:
    assert repr(jsonlimit.fast_loads(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b"{", b"\xff", b"[1,]", b""])
def test_fast_loads_fails_like_json(raw: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(raw)
    with pytest.raises(ValueError) as got:
        jsonlimit.fast_loads(raw)
    assert type(got.value) is type(expected.value)


def test_loads_still_bounds_depth() -> None:
    deep = b"[" * 2000 + b"]" * 2000  # beyond orjson's own limit: json's RecursionError path
    with pytest.raises(jsonlimit.TooDeep):
        jsonlimit.loads(deep)
    medium = b"[" * 150 + b"]" * 150  # orjson decodes it; the bound still applies
    with pytest.raises(jsonlimit.TooDeep):
        jsonlimit.loads(medium)
    assert jsonlimit.loads(b"[" * 50 + b"]" * 50) is not None  # positive control


VALUES = [
    {"k": ALL_BMP + "<a href='x'>&</a>\u2028\u2029\u2013"},
    {"n": None, "t": True, "f": False, "i": -5, "u": 2**64 - 1, "l": [1, "x", {"a": "<b>"}]},
    {"nested": {"labels": {"app": "web", "x/y": "z"}}, "empty": {}, "list": []},
    {"huge": 2**70},  # orjson refuses: json writes it
    [],
    "raw<string>",
]


@pytest.mark.parametrize("value", VALUES)
def test_go_json_without_floats_is_json_bytes(value: object) -> None:
    assert go_value_bytes(value, floats=False) == go_value_bytes(value)


@pytest.mark.parametrize("value", [{"order": 1e-05}, {"x": float("nan")}, {"y": 2.5}])
def test_values_with_floats_are_flagged_and_keep_json_formatting(value: object) -> None:
    assert may_hold_floats(msgpack.packb(value))
    # What orjson would have written differs; the flagged path keeps json's text.
    assert go_value_bytes(value) == json.dumps(value, separators=(",", ":")).encode()


def test_float_free_values_are_not_flagged() -> None:
    assert not may_hold_floats(msgpack.packb({"a": 1, "b": ["x"], "c": None}))


def test_serialized_update_same_bytes_as_json_path() -> None:
    for value in [*VALUES[:3], {"order": 100.0, "big": 1e-7}]:
        kv = msgpack.packb(["/calico/v1/k", value], use_bin_type=True)
        upd = serialized_update(kv, 7, 1)
        assert upd.value == go_value_bytes(value)
