"""JSON decoding with a nesting bound, for everything Typha reads from a datastore or a file.

Python's ``json`` module recurses once per nesting level, so a ~2 KB value such as
``[[[[…]]]]`` 1,000 levels deep raises ``RecursionError`` — not ``ValueError`` — and anything
that walks the result recursively later (converters, ``repr``, msgpack) may fail the same way.
Calico objects are a dozen levels deep at most, so Typha refuses anything deeper than
``MAX_DEPTH`` at the door:

* :func:`loads` — one value (an etcd value, a cache file): ``TooDeep`` (a ``ValueError``) if it
  nests deeper than the bound, however deep it is.
* :func:`loads_marking` — an envelope that carries many objects (a Kubernetes list page, a watch
  line): it never fails for depth. It takes the C decoder's fast path without a depth check
  (checking a multi-megabyte list page would cost more than decoding it; the datastore guards
  each object instead, so whatever fails on a deep object later fails for that object alone).
  Only when the C decoder gives up (``RecursionError``, about 1,000 levels) does the iterative
  parser below take over: a container deeper than the bound is replaced by ``None`` and every
  dict above it gets the key :data:`TOO_DEEP_KEY`, so the datastore treats just that object as
  invalid while still reading its name, and the rest of the page goes on.

:func:`loads` takes the C decoder's fast path too, then checks the depth on the raw text without
recursion (at the cost of two ``bytes.count`` calls for a value with few brackets).

Both decode with orjson first (2-3 times faster than ``json`` on Calico objects: at 20,000
endpoints the values alone took ~0.35 s of a cold start) and fall back to ``json`` for anything
orjson refuses (``NaN``, lone surrogates, UTF-16/32 text, nesting beyond orjson's own limit,
malformed text) and for text with a number of 19 digits or more (which orjson would turn into a
float), so the result — or the error — is ``json``'s.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_DEPTH = 100
"""Deepest nesting accepted (a Calico resource or a Kubernetes pod is < 20 levels deep)."""

TOO_DEEP_KEY = "\x00typha:too-deep"
"""Set (to True) by :func:`loads_marking` in every dict that holds a container nested too
deep; no Kubernetes or Calico field has this name."""


class TooDeep(ValueError):
    """The document nests deeper than the bound."""

    def __init__(self, max_depth: int):
        super().__init__(f"nested deeper than {max_depth} levels")
        self.max_depth = max_depth


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_INNERMOST_PAIRS = re.compile(rb"\{\}|\[\]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _as_bytes(raw: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return bytes(raw)


def depth_exceeds(raw: bytes | bytearray | memoryview | str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether well-formed JSON ``raw`` nests deeper than ``max_depth``, without recursion.

    Cheap: when the document holds no more brackets than the bound it cannot be too deep;
    otherwise strings are cut out, only brackets are kept, and innermost pairs are peeled off
    once per level (each pass is one C-speed regex substitution)."""
    data = _as_bytes(raw)
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        brackets = _INNERMOST_PAIRS.sub(b"", brackets)
        if not brackets:
            return False
    return True


# orjson reads integers beyond 64 bits as floats, silently; a run of 19 digits is where they
# start (2**63 has 19), so text holding one is left to json. Found with one C pass mapping
# digits to "0" and everything else to " ", then a substring search.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def fast_loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """``json.loads(raw)``, through orjson when it gives the same answer (see the module doc);
    text (``str``) goes to json directly."""
    if isinstance(raw, str) or _LONG_NUMBER in bytes(raw).translate(_DIGITS_AS_ZERO):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


# For ``loads`` of bytes: one C pass that serves both checks, the 19-digit search of
# ``fast_loads`` (digits → "0") and the bracket count of ``depth_exceeds`` ("{" and "[" → "[";
# everything else → " ").
_DIGITS_AND_OPENERS = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x5B if b in b"[{" else 0x20 for b in range(256)
)


def loads(raw: bytes | bytearray | memoryview | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises :class:`TooDeep` (a ``ValueError``) for deep nesting and
    ``ValueError`` for anything else malformed — never ``RecursionError``."""
    if type(raw) is bytes:  # every etcd value: the same steps as below, in one pass
        marks = raw.translate(_DIGITS_AND_OPENERS)
        try:
            if _LONG_NUMBER in marks:
                obj = json.loads(raw)
            else:
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    obj = json.loads(raw)
        except RecursionError:
            raise TooDeep(max_depth) from None
        if marks.count(b"[") <= max_depth:  # depth_exceeds' own first test
            return obj
    else:
        try:
            obj = fast_loads(raw)
        except RecursionError:
            raise TooDeep(max_depth) from None
    if isinstance(obj, (dict, list)) and depth_exceeds(raw, max_depth):
        raise TooDeep(max_depth)
    return obj


def loads_marking(raw: bytes | bytearray | memoryview | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode an envelope of many objects; see the module doc. ``ValueError`` if malformed."""
    try:
        return fast_loads(raw)
    except RecursionError:
        pass
    text = raw if isinstance(raw, str) else _as_bytes(raw).decode("utf-8")
    return _parse_marking(text, max_depth)


def nesting_depth(obj: Any) -> int:
    """The nesting depth of a decoded value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


# --- the iterative parser (slow path only) -------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


class _Frame:
    __slots__ = ("container", "key", "tainted", "too_deep")

    def __init__(self, container: dict[str, Any] | list[Any], too_deep: bool):
        self.container = container
        self.key: str | None = None
        self.too_deep = too_deep
        self.tainted = False


def _parse_marking(text: str, max_depth: int) -> Any:
    """An explicit-stack JSON parser: no recursion, so no depth limit of its own."""
    stack: list[_Frame] = []
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    result: Any = None
    have_result = False

    def fail(msg: str) -> ValueError:
        return ValueError(f"{msg} at position {pos}")

    while True:
        # Parse one value starting at pos (a scalar, or the opening of a container).
        if pos >= len(text):
            raise fail("unexpected end of JSON")
        ch = text[pos]
        value: Any
        closed = False
        if ch in "{[":
            frame = _Frame({} if ch == "{" else [], len(stack) + 1 > max_depth)
            stack.append(frame)
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if pos < len(text) and text[pos] == ("}" if ch == "{" else "]"):
                pos += 1
                closed = True
            elif ch == "{":
                pos = _read_key(text, pos, frame, fail)
                continue
            else:
                continue
        elif ch == '"':
            value, pos = _scanstring(text, pos + 1)
        elif text.startswith("true", pos):
            value, pos = True, pos + 4
        elif text.startswith("false", pos):
            value, pos = False, pos + 5
        elif text.startswith("null", pos):
            value, pos = None, pos + 4
        else:
            m = _NUMBER.match(text, pos)
            if not m:
                raise fail("expected a JSON value")
            num = m.group()
            value = float(num) if m.group(1) or m.group(2) else int(num)
            pos = m.end()
        # Deliver the value (or a just-closed container) to its parent, closing containers.
        while True:
            if closed:
                frame = stack.pop()
                if frame.too_deep:
                    value, taint = None, True
                else:
                    value, taint = frame.container, frame.tainted
                    if taint and isinstance(value, dict):
                        value[TOO_DEEP_KEY] = True
                if stack and taint:
                    stack[-1].tainted = True
                closed = False
            if not stack:
                result, have_result = value, True
                break
            parent = stack[-1]
            if isinstance(parent.container, dict):
                parent.container[parent.key] = value  # type: ignore[index]
            else:
                parent.container.append(value)
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            end = "}" if isinstance(parent.container, dict) else "]"
            if pos < len(text) and text[pos] == ",":
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                if end == "}":
                    pos = _read_key(text, pos, parent, fail)
                break
            if pos < len(text) and text[pos] == end:
                pos += 1
                closed = True
                continue
            raise fail(f"expected ',' or {end!r}")
        if have_result:
            break
    if _WS.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise fail("extra data")
    return result


def _read_key(text: str, pos: int, frame: _Frame, fail: Any) -> int:
    if pos >= len(text) or text[pos] != '"':
        raise fail("expected a property name")
    key, pos = _scanstring(text, pos + 1)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos >= len(text) or text[pos] != ":":
        raise fail("expected ':'")
    frame.key = key
    return _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
