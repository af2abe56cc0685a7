"""A bounded gob decoder for what a Calico client sends: Envelopes with MsgClientHello, MsgPong
or MsgACK, and the type definitions Go's encoder sends along (lazily, inside the first value
that needs them; its type ids are process-wide, so any id >= 64 may appear).

Sans-IO: ``feed`` bytes, ``next_message`` returns a decoded message or None until a whole
Envelope has arrived. Everything else is refused with a ``ProtocolError`` subclass: values
of other types, interface values anywhere but ``Envelope.Message``, more than ``max_types``
definitions, nesting deeper than ``max_depth``, strings longer than ``max_string``, or an
Envelope (with the definitions it carries) over ``max_message`` bytes — 1 MiB, like Go Typha —
or spread over more than ``max_parts`` gob messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import FrameTooLarge, MalformedFrame, UnexpectedMessage
from .messages import (
    GO_ZERO_UNIX_NANOS,
    NAME_ACK,
    NAME_CLIENT_HELLO,
    NAME_PONG,
    Ack,
    ClientHello,
    ClientMessage,
    GoTime,
    Pong,
)
from .types import (
    BOOL,
    BUILTIN_IDS,
    BYTES,
    COMPLEX,
    FIRST_USER_ID,
    FLOAT,
    INT,
    INTERFACE,
    STRING,
    UINT,
    Kind,
    WireType,
    decode_definition,
)
from .wire import Reader, read_uint_prefix

DEFAULT_MAX_MESSAGE = 1 << 20
DEFAULT_MAX_TYPES = 64
DEFAULT_MAX_DEPTH = 8
DEFAULT_MAX_STRING = 4096
# Go's client spreads one Envelope over at most 4 gob messages (its first hello: the Envelope
# definition, the hello with its definition, the slice definition, the value). An incomplete
# Envelope is parsed again from its start as each further message arrives, so this also
# bounds that work.
DEFAULT_MAX_PARTS = 16

# A struct value as decoded: field name -> (wire type id, value).
Fields = dict[str, tuple[int, Any]]


class _NeedMore(Exception):
    """The Envelope is not complete in the buffer yet."""


class _Cursor:
    """Hands out the buffer's complete messages, counting them against the size budget."""

    def __init__(self, buf: bytearray, max_message: int, max_parts: int) -> None:
        self.buf = buf
        self.pos = 0
        self.used = 0
        self.parts = 0
        self.max_message = max_message
        self.max_parts = max_parts
        self.need = 0  # with _NeedMore: the buffer length that completes the next message

    def next(self) -> Reader:
        prefix = read_uint_prefix(self.buf, self.pos)
        if prefix is None:
            # The count itself is incomplete: wait for its first byte, then for all of it.
            has_first = self.pos < len(self.buf)
            self.need = self.pos + 1 + (256 - self.buf[self.pos] if has_first else 0)
            raise _NeedMore
        length, start = prefix
        if length == 0:
            raise MalformedFrame("gob: empty message")
        self.parts += 1
        if self.parts > self.max_parts:
            raise MalformedFrame(f"gob: one Envelope spans more than {self.max_parts} messages")
        self.used += start - self.pos + length
        if self.used > self.max_message:
            raise FrameTooLarge(
                f"gob: client message of over {self.used} bytes exceeds the limit of "
                f"{self.max_message}"
            )
        end = start + length
        if end > len(self.buf):
            self.need = end
            raise _NeedMore
        self.pos = end
        return Reader(bytes(self.buf[start:end]))


class GobDecoder:
    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_types: int = DEFAULT_MAX_TYPES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_string: int = DEFAULT_MAX_STRING,
        max_parts: int = DEFAULT_MAX_PARTS,
        accept: Mapping[str, Converter] | None = None,
    ) -> None:
        self.max_message = max_message
        self.max_types = max_types
        self.max_depth = max_depth
        self.max_string = max_string
        self.max_parts = max_parts
        self.types: dict[int, WireType] = {}
        self._accept = dict(CLIENT_MESSAGES if accept is None else accept)
        self._buf = bytearray()
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (for the server's input budget)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def discard(self) -> None:
        """Drop whatever is buffered (the connection is over): its memory is freed now."""
        self._buf = bytearray()
        self._need = 0

    def next_message(self) -> ClientMessage | None:
        if not self._buf or len(self._buf) < self._need:
            return None
        cursor = _Cursor(self._buf, self.max_message, self.max_parts)
        before = dict(self.types)
        try:
            msg = self._envelope(cursor)
        except _NeedMore:
            self.types = before  # definitions count once the whole Envelope is here
            self._need = cursor.need
            return None
        del self._buf[: cursor.pos]
        self._need = 0
        return msg

    # --- the Envelope and its interface value -------------------------------------------

    def _envelope(self, cursor: _Cursor) -> ClientMessage:
        while True:  # top-level type definitions, then a value
            r = cursor.next()
            type_id = r.sint()
            if type_id >= 0:
                break
            self._define(r, -type_id)
            if r.remaining:
                raise MalformedFrame("gob: extra data after a type definition")
        wire = self._user_type(type_id)
        fields = dict(wire.fields) if wire.kind is Kind.STRUCT else {}
        self._check_defined(type_id)
        if fields.get("Message") != INTERFACE:
            raise UnexpectedMessage(
                f"gob: expected an Envelope with a Message interface, got type {wire.name!r}"
            )
        msg: ClientMessage | None = None
        field = -1
        while r.remaining:  # as in Go, a struct may also end with its message
            delta = r.uint()
            if delta == 0:
                break
            field += delta
            if field >= len(wire.fields):
                raise MalformedFrame("gob: field number out of range")
            name, fid = wire.fields[field]
            if name == "Message":
                msg, r = self._interface(r, cursor)
            else:
                self._value(r, fid, 1)
        if r.remaining:
            raise MalformedFrame("gob: extra data after the Envelope")
        if msg is None:
            raise UnexpectedMessage("gob: Envelope without a message")
        return msg

    def _interface(self, r: Reader, cursor: _Cursor) -> tuple[ClientMessage, Reader]:
        name = r.bytes(self.max_string).decode("utf-8", "replace")
        if not name:
            raise UnexpectedMessage("gob: Envelope with a nil message")
        convert = self._accept.get(name)
        if convert is None:
            raise UnexpectedMessage(f"gob: a client may not send {name!r}")
        # The concrete type's definitions may follow inline, each further one in a message
        # of its own (that is what Go's encoder writes); then the concrete type id.
        while True:
            if not r.remaining:
                r = cursor.next()
            type_id = r.sint()
            if type_id >= 0:
                break
            self._define(r, -type_id)
            if r.remaining:
                r.uint()  # gob tolerates a byte count here; its value is not needed
        r.uint()  # the value's byte count (gob decodes the value regardless)
        wire = self._user_type(type_id)
        if wire.kind is not Kind.STRUCT:
            raise UnexpectedMessage(f"gob: {name!r} must be a struct")
        # Like Go, judge the whole type before the value: every type it refers to must be
        # defined, and every field we know must have a compatible type, sent or not.
        self._check_defined(type_id)
        convert.check(wire, self)
        value = self._struct(r, wire, 1)
        return convert.build(value, self), r

    # --- types ------------------------------------------------------------------------

    def _define(self, r: Reader, type_id: int) -> None:
        if type_id < FIRST_USER_ID or type_id in self.types:
            raise MalformedFrame(f"gob: type id {type_id} is reserved or already defined")
        if len(self.types) >= self.max_types:
            raise MalformedFrame(
                f"gob: more than {self.max_types} type definitions on one connection"
            )
        self.types[type_id] = decode_definition(r, type_id)

    def _check_defined(self, type_id: int) -> None:
        """Every type ``type_id`` refers to, transitively, is gob's or defined here."""
        todo, seen = [type_id], set()
        while todo:
            tid = todo.pop()
            if tid in seen or tid in BUILTIN_IDS:
                continue
            seen.add(tid)
            wire = self.types.get(tid)
            if wire is None:
                if 0 < tid < FIRST_USER_ID:
                    raise MalformedFrame(f"gob: type id {tid} (gob-internal) is not accepted")
                raise MalformedFrame(f"gob: type {type_id} refers to undefined type id {tid}")
            if wire.kind is Kind.STRUCT:
                todo.extend(fid for _, fid in wire.fields)
            elif wire.kind is Kind.MAP:
                todo += (wire.key, wire.elem)
            elif wire.kind in (Kind.SLICE, Kind.ARRAY):
                todo.append(wire.elem)

    def _user_type(self, type_id: int) -> WireType:
        wire = self.types.get(type_id)
        if wire is None:
            raise MalformedFrame(f"gob: value of undefined type id {type_id}")
        return wire

    # --- values -----------------------------------------------------------------------

    def _value(self, r: Reader, type_id: int, depth: int) -> Any:
        if type_id == STRING:
            return r.bytes(self.max_string).decode("utf-8", "replace")
        if type_id == BOOL:
            return r.uint() != 0
        if type_id == UINT:
            return r.uint()
        if type_id == INT:
            return r.sint()
        if type_id == BYTES:
            return r.bytes(self.max_string)
        if type_id == FLOAT:
            return r.flt()
        if type_id == COMPLEX:
            return complex(r.flt(), r.flt())
        if type_id == INTERFACE:
            raise UnexpectedMessage("gob: interface values are only accepted as the message")
        if depth >= self.max_depth:
            raise MalformedFrame(f"gob: values nested deeper than {self.max_depth}")
        wire = self._user_type(type_id)
        kind = wire.kind
        if kind is Kind.STRUCT:
            return self._struct(r, wire, depth + 1)
        if kind is Kind.SLICE or kind is Kind.ARRAY:
            n = r.count()
            if kind is Kind.ARRAY and n != wire.length:
                raise MalformedFrame("gob: array length does not match its type")
            return [self._value(r, wire.elem, depth + 1) for _ in range(n)]
        if kind is Kind.MAP:
            n = r.count(2)
            return [
                (self._value(r, wire.key, depth + 1), self._value(r, wire.elem, depth + 1))
                for _ in range(n)
            ]
        return r.bytes(self.max_message)  # GobEncoder / BinaryMarshaler / TextMarshaler

    def _struct(self, r: Reader, wire: WireType, depth: int) -> Fields:
        out: Fields = {}
        field = -1
        while r.remaining:  # as in Go, a struct may also end with its message
            delta = r.uint()
            if delta == 0:
                break
            field += delta
            if field >= len(wire.fields):
                raise MalformedFrame(f"gob: field number out of range in {wire.name!r}")
            name, fid = wire.fields[field]
            out[name] = (fid, self._value(r, fid, depth))
        return out


# --- conversion to our message classes -------------------------------------------------------
# Go matches fields by name and ignores the names it does not know; a known name must have a
# compatible wire type (string for string, bool for bool, uint for uint64, a slice of string for
# a slice of strings, a GobEncoder for time.Time) whether or not the value carries it.

TypeCheck = Callable[[int, "GobDecoder"], bool]


def _is(type_id: int) -> TypeCheck:
    return lambda t, dec: t == type_id


def _slice_of_strings(t: int, dec: GobDecoder) -> bool:
    wire = dec.types.get(t)
    return wire is not None and wire.kind is Kind.SLICE and wire.elem == STRING


def _time_type(t: int, dec: GobDecoder) -> bool:
    wire = dec.types.get(t)
    return wire is not None and wire.kind is Kind.GOB_ENCODER


class Converter:
    def __init__(
        self, fields: Mapping[str, TypeCheck], build: Callable[[Fields, GobDecoder], ClientMessage]
    ) -> None:
        self.fields = fields
        self.build = build

    def check(self, wire: WireType, dec: GobDecoder) -> None:
        if self.fields and not any(name in self.fields for name, _ in wire.fields):
            # Go's rule too: a struct with fields must share at least one with the wire type.
            raise UnexpectedMessage(f"gob: no fields of {wire.name!r} match the message's")
        for name, type_id in wire.fields:
            check = self.fields.get(name)
            if check is not None and not check(type_id, dec):
                raise UnexpectedMessage(
                    f"gob: field {wire.name}.{name} has an incompatible type (id {type_id})"
                )


def _get(fields: Fields, name: str, zero: Any) -> Any:
    entry = fields.get(name)
    return zero if entry is None else entry[1]


def _time(fields: Fields, name: str) -> GoTime | None:
    raw = _get(fields, name, None)
    if raw is None:
        return None
    try:
        t = GoTime.from_binary(raw)
    except ValueError as exc:
        raise MalformedFrame(f"gob: {name}: {exc}") from None
    return None if t.unix_nanos == GO_ZERO_UNIX_NANOS else t  # None: the zero time, as omitted


def _client_hello(fields: Fields, dec: GobDecoder) -> ClientHello:
    return ClientHello(
        hostname=_get(fields, "Hostname", ""),
        info=_get(fields, "Info", ""),
        version=_get(fields, "Version", ""),
        syncer_type=_get(fields, "SyncerType", ""),
        supports_decoder_restart=_get(fields, "SupportsDecoderRestart", False),
        supported_compression=tuple(_get(fields, "SupportedCompressionAlgorithms", ())),
        supports_modern_policy_keys=_get(fields, "SupportsModernPolicyKeys", False),
        client_conn_id=_get(fields, "ClientConnID", 0),
    )


def _pong(fields: Fields, dec: GobDecoder) -> Pong:
    return Pong(_time(fields, "PingTimestamp"), _time(fields, "PongTimestamp"))


def _ack(fields: Fields, dec: GobDecoder) -> Ack:
    return Ack()


CLIENT_MESSAGES: Mapping[str, Converter] = {
    NAME_CLIENT_HELLO: Converter(
        {
            "Hostname": _is(STRING),
            "Info": _is(STRING),
            "Version": _is(STRING),
            "SyncerType": _is(STRING),
            "SupportsDecoderRestart": _is(BOOL),
            "SupportedCompressionAlgorithms": _slice_of_strings,
            "SupportsModernPolicyKeys": _is(BOOL),
            "ClientConnID": _is(UINT),
        },
        _client_hello,
    ),
    NAME_PONG: Converter({"PingTimestamp": _time_type, "PongTimestamp": _time_type}, _pong),
    NAME_ACK: Converter({}, _ack),
}
