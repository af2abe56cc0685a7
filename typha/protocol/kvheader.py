"""Reading a KVs message's header without decoding its KVs (the light client's fast path).

A KVs payload is the msgpack array ``[4, kind, seq, revision, count, [kv, ...]]``; its first
35 bytes at most hold everything but the KVs. A client that only counts what it receives reads
those and skips the rest in place.
"""

from __future__ import annotations

from .errors import ProtocolError

# Bytes of a KVs payload that hold its header: fixarray(6), type, kind, seq (≤ 9 bytes),
# revision (≤ 9), count (≤ 9), array header (≤ 5) = at most 35.
KVS_PREFIX = 40


def _read_int(b: bytes, i: int) -> tuple[int | None, int]:
    """One msgpack integer (or nil) at ``b[i]``: (value, next offset). Raises ValueError."""
    c = b[i]
    if c <= 0x7F:
        return c, i + 1
    if c == 0xCD:  # the usual sequence number and revision sizes first
        return (b[i + 1] << 8) | b[i + 2], i + 3
    if c == 0xCE:
        return int.from_bytes(b[i + 1 : i + 5], "big"), i + 5
    if c >= 0xE0:
        return c - 0x100, i + 1
    if c == 0xC0:
        return None, i + 1
    if 0xCC <= c <= 0xCF:
        n = 1 << (c - 0xCC)
        return int.from_bytes(b[i + 1 : i + 1 + n], "big"), i + 1 + n
    if 0xD0 <= c <= 0xD3:
        n = 1 << (c - 0xD0)
        return int.from_bytes(b[i + 1 : i + 1 + n], "big", signed=True), i + 1 + n
    raise ValueError(f"not a msgpack integer: {c:#x}")


def _array_len(b: bytes, i: int) -> tuple[int, int]:
    c = b[i]
    if 0x90 <= c <= 0x9F:
        return c & 0x0F, i + 1
    if c == 0xDC:
        return int.from_bytes(b[i + 1 : i + 3], "big"), i + 3
    if c == 0xDD:
        return int.from_bytes(b[i + 1 : i + 5], "big"), i + 5
    raise ValueError(f"not a msgpack array: {c:#x}")


def is_kvs_payload(prefix: bytes) -> bool:
    """Whether a payload (or its first bytes) is a KVs message: ``[4, ...]`` of 6 elements."""
    return len(prefix) >= 2 and prefix[0] == 0x96 and prefix[1] == 0x04


def parse_kvs_header(prefix: bytes) -> tuple[int, int, int | None, int]:
    """(kind, seq, revision, count) of a KVs payload from its first bytes (≥ 35 or all).

    Checks the types the protocol requires and that ``count`` equals the array length.
    Raises ProtocolError otherwise.
    """
    try:
        kind = prefix[2]
        seq, i = _read_int(prefix, 3)
        rev, i = _read_int(prefix, i)
        c = prefix[i]
        if c <= 0x7F:
            count, i = c, i + 1
        else:
            count, i = _read_int(prefix, i)
        c = prefix[i]
        n = c & 0x0F if 0x90 <= c <= 0x9F else _array_len(prefix, i)[0]
    except (ValueError, IndexError):
        raise ProtocolError("malformed KVs header") from None
    if kind not in (0, 1, 2) or seq is None or count is None or n != count:
        raise ProtocolError("invalid KVs header")
    return kind, seq, rev, count
