"""gob type descriptions: the predefined ids and the wireType messages that define new ones.

A type definition message is ``int(-id)`` followed by a value of gob's own ``wireType``
struct, whose fields (in this order) are ArrayT, SliceT, StructT, MapT, GobEncoderT,
BinaryMarshalerT and TextMarshalerT; exactly one is set. Each of those embeds
``CommonType{Name string; Id int}`` as its field 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..errors import MalformedFrame
from .wire import Reader, sint, string, uint

# Ids every gob stream knows a priori.
BOOL = 1
INT = 2
UINT = 3
FLOAT = 4
BYTES = 5
STRING = 6
COMPLEX = 7
INTERFACE = 8
BUILTIN_IDS = frozenset(range(1, 9))
# The first id a stream may define (smaller ones are reserved); gob refuses to define an id twice.
FIRST_USER_ID = 64

BASIC_NAMES = {
    BOOL: "bool",
    INT: "int",
    UINT: "uint",
    FLOAT: "float",
    BYTES: "[]byte",
    STRING: "string",
    COMPLEX: "complex",
    INTERFACE: "interface",
}


class Kind(Enum):
    # Value: the wireType field number that carries this kind.
    ARRAY = 0
    SLICE = 1
    STRUCT = 2
    MAP = 3
    GOB_ENCODER = 4
    BINARY_MARSHALER = 5
    TEXT_MARSHALER = 6


@dataclass(frozen=True, slots=True)
class WireType:
    kind: Kind
    name: str
    id: int
    elem: int = 0  # array, slice, map
    length: int = 0  # array
    key: int = 0  # map
    fields: tuple[tuple[str, int], ...] = ()  # struct: (name, type id) in field-number order


def _common(t: WireType) -> bytes:
    out = b""
    if t.name:
        out += b"\x01" + string(t.name.encode())
        out += b"\x01" + sint(t.id)
    else:
        out += b"\x02" + sint(t.id)
    return out + b"\x00"


def encode_definition(t: WireType) -> bytes:
    """The body of the message that defines ``t`` (without the length prefix)."""
    inner = b"\x01" + _common(t)  # field 0: CommonType
    if t.kind in (Kind.ARRAY, Kind.SLICE):
        inner += b"\x01" + sint(t.elem)
        if t.kind is Kind.ARRAY:
            inner += b"\x01" + sint(t.length) if t.length else b""
    elif t.kind is Kind.MAP:
        inner += b"\x01" + sint(t.key) + b"\x01" + sint(t.elem)
    elif t.kind is Kind.STRUCT and t.fields:
        inner += b"\x01" + uint(len(t.fields))
        for name, fid in t.fields:
            inner += b"\x01" + string(name.encode()) + b"\x01" + sint(fid) + b"\x00"
    inner += b"\x00"
    return sint(-t.id) + uint(t.kind.value + 1) + inner + b"\x00"


# Bounds on what a peer may define (a type definition is small: names and ids).
MAX_NAME = 256
MAX_FIELDS = 64


def _read_struct(r: Reader, handlers: dict[int, object]) -> None:
    """Walk a struct's (delta, value) pairs, calling handlers[field](); unknown fields fail."""
    field = -1
    while r.remaining:  # as in Go, a struct may also end with its message
        delta = r.uint()
        if delta == 0:
            return
        field += delta
        handler = handlers.get(field)
        if handler is None:
            raise MalformedFrame(f"gob: unexpected field {field} in a type definition")
        handler()  # type: ignore[operator]


def decode_definition(r: Reader, type_id: int) -> WireType:
    """Read a wireType value (after the ``-id`` already read) and check it describes ``type_id``."""
    found: dict[str, object] = {}

    def common() -> None:
        c: dict[str, object] = {}

        def name() -> None:
            c["name"] = r.bytes(MAX_NAME).decode("utf-8", "replace")

        def cid() -> None:
            c["id"] = r.sint()

        _read_struct(r, {0: name, 1: cid})
        found["common"] = c

    def elem() -> None:
        found["elem"] = r.sint()

    def length() -> None:
        found["length"] = r.sint()

    def key() -> None:
        found["key"] = r.sint()

    def fields() -> None:
        n = r.count(2)
        if n > MAX_FIELDS:
            raise MalformedFrame(f"gob: a struct of {n} fields exceeds the limit of {MAX_FIELDS}")
        out = []
        for _ in range(n):
            f: dict[str, object] = {"name": "", "id": 0}

            def fname(f: dict[str, object] = f) -> None:
                f["name"] = r.bytes(MAX_NAME).decode("utf-8", "replace")

            def fid(f: dict[str, object] = f) -> None:
                f["id"] = r.sint()

            _read_struct(r, {0: fname, 1: fid})
            out.append((f["name"], f["id"]))
        found["fields"] = tuple(out)

    kinds: list[Kind] = []

    def kind_handler(kind: Kind):
        def run() -> None:
            kinds.append(kind)
            if kind in (Kind.ARRAY,):
                _read_struct(r, {0: common, 1: elem, 2: length})
            elif kind is Kind.SLICE:
                _read_struct(r, {0: common, 1: elem})
            elif kind is Kind.STRUCT:
                _read_struct(r, {0: common, 1: fields})
            elif kind is Kind.MAP:
                _read_struct(r, {0: common, 1: key, 2: elem})
            else:
                _read_struct(r, {0: common})

        return run

    _read_struct(r, {k.value: kind_handler(k) for k in Kind})
    if len(kinds) != 1:
        raise MalformedFrame("gob: a type definition must describe exactly one kind")
    c = found.get("common", {})
    assert isinstance(c, dict)
    if c.get("id") != type_id:
        raise MalformedFrame(f"gob: type definition for id {type_id} carries id {c.get('id')}")
    t = WireType(
        kind=kinds[0],
        name=str(c.get("name", "")),
        id=type_id,
        elem=int(found.get("elem", 0)),  # type: ignore[call-overload]
        length=int(found.get("length", 0)),  # type: ignore[call-overload]
        key=int(found.get("key", 0)),  # type: ignore[call-overload]
        fields=found.get("fields", ()),  # type: ignore[arg-type]
    )
    if t.kind is Kind.ARRAY and t.length < 0:
        raise MalformedFrame("gob: negative array length")
    return t
