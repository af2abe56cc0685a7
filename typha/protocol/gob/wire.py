"""gob's primitive encodings (encoding/gob's doc.go, "Encoding Details") and a bounded reader.

Unsigned integers: below 128 one byte; otherwise the negated byte count, then the minimal
big-endian bytes. Signed integers travel inside an unsigned one: bit 0 says "complement the
rest". Floats: the IEEE bits byte-reversed, sent as an unsigned. Strings and byte slices: a
count, then the bytes.
"""

from __future__ import annotations

import struct

from ..errors import MalformedFrame

_SMALL = [bytes((i,)) for i in range(128)]
UINT64_MAX = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def uint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    if n > UINT64_MAX:
        raise ValueError(f"{n} does not fit a gob uint")
    size = (n.bit_length() + 7) >> 3
    return bytes((256 - size,)) + n.to_bytes(size, "big")


def sint(i: int) -> bytes:
    if not INT64_MIN <= i <= INT64_MAX:
        raise ValueError(f"{i} does not fit a gob int")
    return uint((~i << 1) | 1 if i < 0 else i << 1)


def flt(x: float) -> bytes:
    return uint(int.from_bytes(struct.pack("<d", x), "big"))


def string(b: bytes) -> bytes:
    return uint(len(b)) + b


def message(body: bytes) -> bytes:
    """A delimited message: its byte count, then the bytes."""
    return uint(len(body)) + body


def read_uint_prefix(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """Decode a uint at ``pos`` of a stream: (value, new position), or None if incomplete."""
    if pos >= len(buf):
        return None
    b = buf[pos]
    if b < 128:
        return b, pos + 1
    size = 256 - b
    if size > 8:
        raise MalformedFrame(f"gob: a uint cannot be {size} bytes long")
    end = pos + 1 + size
    if end > len(buf):
        return None
    return int.from_bytes(buf[pos + 1 : end], "big"), end


class Reader:
    """Reads primitives from one message's bytes; every read is checked against the end."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def uint(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise MalformedFrame("gob: message ends inside a value")
        b = self.buf[pos]
        if b < 128:
            self.pos = pos + 1
            return b
        size = 256 - b
        if size > 8:
            raise MalformedFrame(f"gob: a uint cannot be {size} bytes long")
        end = pos + 1 + size
        if end > self.end:
            raise MalformedFrame("gob: message ends inside a uint")
        self.pos = end
        return int.from_bytes(self.buf[pos + 1 : end], "big")

    def sint(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def flt(self) -> float:
        u = self.uint()
        return struct.unpack("<d", u.to_bytes(8, "big"))[0]

    def bytes(self, limit: int) -> bytes:
        n = self.uint()
        if n > limit:
            raise MalformedFrame(f"gob: {n} bytes exceed the limit of {limit}")
        return self.take(n)

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise MalformedFrame("gob: length runs past the end of the message")
        start = self.pos
        self.pos = start + n
        return bytes(self.buf[start : self.pos])

    def count(self, min_item_bytes: int = 1) -> int:
        """A slice/map/array element count, checked against the bytes left (no huge allocs)."""
        n = self.uint()
        if n * min_item_bytes > self.end - self.pos:
            raise MalformedFrame(f"gob: count {n} exceeds the bytes left in the message")
        return n
