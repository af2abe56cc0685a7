"""Go-style JSON of gob values: orjson for float-free values, json otherwise, same bytes."""

from __future__ import annotations

import json

import msgpack
import pytest

from typha.server.gob_codec import go_value_bytes, may_hold_floats, serialized_update

ALL_BMP = "".join(chr(i) for i in range(0x3000)) + "\U0001f600"

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
