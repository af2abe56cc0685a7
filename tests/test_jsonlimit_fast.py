"""typha.jsonlimit.fast_loads: orjson where it gives json's answer, json where it does not."""

from __future__ import annotations

import json

import pytest

from typha import jsonlimit

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
