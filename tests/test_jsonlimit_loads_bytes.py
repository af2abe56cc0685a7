"""typha.jsonlimit.loads: its one-pass route for ``bytes`` (every etcd value) gives the same
answer — value, or error type and message — as the general route (``fast_loads``, then
``depth_exceeds``), which a ``bytearray`` of the same text still takes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typha import jsonlimit


def answer(raw: bytes | bytearray) -> tuple[str, str]:
    try:
        return ("value", repr(jsonlimit.loads(raw)))
    except ValueError as exc:
        return (type(exc).__name__, str(exc))


def same_both_ways(raw: bytes) -> tuple[str, str]:
    got = answer(raw)
    assert got == answer(bytearray(raw))
    return got


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"a": [1, {"b": null}], "c": "x\\u00e9", "e": -0, "f": 1.5e300}', "value"),
        (b'{"big": 123456789012345678901234567890}', "value"),  # json's int, not a float
        (b"NaN", "value"),
        (b'"[[[[[' + b"[" * 200 + b'"', "value"),  # brackets in a string are not nesting
        (b"[" * 100 + b"]" * 100, "value"),  # at the bound
        (b"[" * 101 + b"]" * 101, "TooDeep"),  # one beyond it
        (b'{"a":' * 150 + b"1" + b"}" * 150, "TooDeep"),
        (b"[" * 2000 + b"]" * 2000, "TooDeep"),  # beyond orjson's own limit too
        (b"{", "JSONDecodeError"),
        (b"\xff", "UnicodeDecodeError"),
        (b"", "JSONDecodeError"),
    ],
)
def test_bytes_and_the_general_route_agree(raw: bytes, kind: str) -> None:
    assert same_both_ways(raw)[0] == kind


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_bytes_route_on_generated_documents(doc: object) -> None:
    raw = json.dumps(doc).encode()
    assert same_both_ways(raw) == ("value", repr(json.loads(raw)))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64)
    | st.text(alphabet='[]{}"\\0123456789,:.e-', max_size=300).map(str.encode)
)
def test_bytes_route_on_arbitrary_bytes(raw: bytes) -> None:
    same_both_ways(raw)
