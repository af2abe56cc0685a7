"""Depth-aware generators for the fuzzers: JSON text, msgpack values and gob messages nested to
a chosen depth, built without recursion and with their true depth known.

Byte- and structure-level mutation rarely nests deeper than its seed, so the bounds that matter
(100 levels for datastore JSON, msgpack's 1,024 on the wire, gob's nesting cap) are never
reached by chance. These build a value ``depth`` levels deep from a ``random.Random`` (hypothesis
draws the seed), mixing containers of every kind, with siblings beside the deep path and
strings full of brackets and quotes (which a depth check on raw text must not count), and
return the depth the result really has, so a test can check each bound on both sides.
"""

from __future__ import annotations

import json
import random
from typing import Any

from typha.protocol.gob.messages import NAME_CLIENT_HELLO
from typha.protocol.gob.types import INTERFACE, STRING, Kind, WireType, encode_definition
from typha.protocol.gob.wire import message, sint, string, uint

# Strings a naive bracket counter would miscount.
TRICKY_STRINGS = ["", "[", "]]", "{", '{"a":[', '\\"]', "x]}", "\\", "[[[[[[[[[[", "é"]
_JSON_SCALARS = ["0", "-1.5e3", "true", "null", '"x"']


def _json_sibling(rng: random.Random) -> tuple[str, int]:
    """A JSON value to put beside the deep path, and its own depth (0 for a scalar)."""
    r = rng.randrange(5)
    if r == 0:
        return json.dumps(rng.choice(TRICKY_STRINGS)), 0
    if r == 1:
        return rng.choice(_JSON_SCALARS), 0
    if r == 2:
        return "[]", 1
    if r == 3:
        return '{"k": [1, "]"]}', 2
    return json.dumps("".join(rng.choices(TRICKY_STRINGS, k=8))), 0


def deep_json(rng: random.Random, depth: int) -> tuple[str, int]:
    """JSON text whose deepest path has ``depth`` containers (lists and objects at random), and
    the true depth of the whole text (siblings near the bottom may add a level or two)."""
    opens: list[str] = []
    closes: list[str] = []
    true_depth = depth
    for level in range(1, depth + 1):  # the container opened here is at nesting level `level`
        before, after = [], []
        for side in (before, after):
            if rng.random() < 0.3:
                text, d = _json_sibling(rng)
                side.append(text)
                true_depth = max(true_depth, level + d)
        if rng.random() < 0.5:
            opens.append("[" + "".join(f"{s}, " for s in before))
            closes.append("".join(f", {s}" for s in after) + "]")
        else:
            key = json.dumps(rng.choice(TRICKY_STRINGS))
            pre = "".join(f"{json.dumps('b' + rng.choice(TRICKY_STRINGS))}: {s}, " for s in before)
            post = "".join(f"{json.dumps(', a' + rng.choice(TRICKY_STRINGS))}: {s}" for s in after)
            post = ", " + post if post else ""
            opens.append("{" + pre + key + ": ")
            closes.append(post + "}")
    leaf = (
        json.dumps(rng.choice(TRICKY_STRINGS)) if rng.random() < 0.5 else rng.choice(_JSON_SCALARS)
    )
    return "".join(opens) + leaf + "".join(reversed(closes)), true_depth


_PLACEHOLDER = "@@typha-fuzz-deep-value@@"


# Never replaced, so a test can still tell which object it was: kind, apiVersion, metadata and
# metadata.name (a deep value may still be added beside them).
_IDENTITY = frozenset({"kind", "apiVersion", "metadata", "name"})


def _slots(doc: Any) -> list[tuple[Any, Any, int]]:
    """Every place in ``doc`` a value may go: (container, key or index, nesting level of the
    value placed there), except the object's identity. Seeds are a few levels deep, so plain
    recursion is fine here."""
    out: list[tuple[Any, Any, int]] = []

    def walk(node: Any, level: int) -> None:
        if isinstance(node, dict):
            out.append((node, f"x-deep-{len(out)}", level + 1))  # a new field
            for k, v in node.items():
                if not (level < 2 and k in _IDENTITY):
                    out.append((node, k, level + 1))
                walk(v, level + 1)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out.append((node, i, level + 1))
                walk(v, level + 1)

    walk(doc, 0)
    return out


def _depth_of(doc: Any) -> int:
    """Nesting depth of a shallow decoded document (a scalar is 0)."""
    if isinstance(doc, dict):
        return 1 + max((_depth_of(v) for v in doc.values()), default=0)
    if isinstance(doc, list):
        return 1 + max((_depth_of(v) for v in doc), default=0)
    return 0


def embed_json(doc: Any, rng: random.Random, inner: str, inner_depth: int) -> tuple[str, int]:
    """``doc`` (a copy) as JSON text with ``inner`` put in one place chosen at random (replacing
    a value or as a new field), and the true depth of the result."""
    doc = json.loads(json.dumps(doc))
    slots = _slots(doc)
    if not slots:
        return inner, inner_depth
    container, key, level = rng.choice(slots)
    container[key] = _PLACEHOLDER
    outer_depth = _depth_of(doc)
    text = json.dumps(doc).replace(json.dumps(_PLACEHOLDER), inner, 1)
    return text, max(outer_depth, level + inner_depth)


# --- msgpack -------------------------------------------------------------------------------------


def deep_msgpack(rng: random.Random, depth: int) -> tuple[bytes, Any]:
    """Raw msgpack bytes nested ``depth`` levels (arrays and maps, with scalar siblings), written
    byte by byte so that no packer's limit applies, and the same value as Python objects."""
    head = bytearray()
    steps: list[tuple[str, Any]] = []
    for _ in range(depth):
        r = rng.randrange(3)
        if r == 0:
            head += b"\x91"  # [deep]
            steps.append(("list", None))
        elif r == 1:
            head += b"\x92\xc0"  # [nil, deep]
            steps.append(("list-after-nil", None))
        else:
            k = rng.choice(TRICKY_STRINGS).encode()[:31]
            head += b"\x81" + bytes([0xA0 | len(k)]) + k  # {k: deep}
            steps.append(("map", k.decode()))
    head += b"\xa1x"  # the leaf: "x"
    value: Any = "x"
    for kind, key in reversed(steps):  # rebuilt inside out, iteratively
        if kind == "list":
            value = [value]
        elif kind == "list-after-nil":
            value = [None, value]
        else:
            value = {key: value}
    return bytes(head), value


# --- gob -----------------------------------------------------------------------------------------


def deep_gob_hello(rng: random.Random, depth: int) -> bytes:
    """A gob stream of one Envelope holding a MsgClientHello with one extra field nested
    ``depth`` user types deep (slices, arrays, one-field structs and maps at random) around one
    string, beside its `Info` field (a message must share a field with ours), which is left
    absent, so it decodes as a default hello."""
    defs: list[WireType] = []
    elem = STRING
    value = string(b"a")
    for i in range(depth):
        tid = 150 + i
        r = rng.randrange(4)
        if r == 0:
            defs.append(WireType(Kind.SLICE, "", tid, elem=elem))
            value = uint(1) + value
        elif r == 1:
            defs.append(WireType(Kind.ARRAY, "", tid, elem=elem, length=1))
            value = uint(1) + value
        elif r == 2:
            defs.append(WireType(Kind.STRUCT, f"S{i}", tid, fields=(("F", elem),)))
            value = uint(1) + value + b"\x00"
        else:
            defs.append(WireType(Kind.MAP, "", tid, key=STRING, elem=elem))
            value = uint(1) + string(b"k") + value
        elem = tid
    hello = WireType(Kind.STRUCT, "MsgClientHello", 140, fields=(("Extra", elem), ("Info", STRING)))
    envelope = WireType(Kind.STRUCT, "Envelope", 141, fields=(("Message", INTERFACE),))
    body = uint(1) + value + b"\x00"
    return b"".join(message(encode_definition(t)) for t in [*defs, hello, envelope]) + message(
        sint(141)
        + uint(1)
        + string(NAME_CLIENT_HELLO.encode())
        + sint(140)
        + uint(len(body))
        + body
        + b"\x00"
    )
