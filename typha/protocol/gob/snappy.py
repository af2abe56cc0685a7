"""Snappy's framing format (the one Go's github.com/golang/snappy Reader/Writer speak).

A stream starts with the stream identifier chunk; each later chunk is a type byte, a 3-byte
little-endian length, then (for data chunks) the masked CRC-32C of the *uncompressed* bytes
(4 bytes, little-endian) and the data: snappy-compressed (type 0x00) or stored (0x01). A data
chunk holds at most 64 KiB of uncompressed input and depends on no other chunk, so chunks
compressed once can be spliced into any stream after its identifier: that is how a shared,
pre-compressed message reaches every snappy connection.

Compression is cramjam's raw snappy block and the checksum google-crc32c's; the framing is
done here, which halves the cost per delta against cramjam's own framed encoder
(docs/dependencies.md).
"""

from __future__ import annotations

import cramjam
import google_crc32c

from ..errors import FrameTooLarge, MalformedFrame

STREAM_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
_COMPRESSED = 0x00
_UNCOMPRESSED = 0x01
_PADDING = 0xFE
MAX_BLOCK = 65536


def _masked_crc(data: bytes) -> int:
    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _chunk(kind: int, crc: int, body: bytes) -> bytes:
    n = len(body) + 4
    return bytes((kind, n & 0xFF, (n >> 8) & 0xFF, n >> 16)) + crc.to_bytes(4, "little") + body


def compress_chunks(data: bytes) -> bytes:
    """``data`` as framed-format data chunks (no stream identifier)."""
    out = []
    for start in range(0, len(data), MAX_BLOCK):
        block = data if len(data) <= MAX_BLOCK else data[start : start + MAX_BLOCK]
        packed = bytes(cramjam.snappy.compress_raw(block))
        crc = _masked_crc(block)
        # Like Go's writer: store the block when compression saves less than 1/8.
        if len(packed) >= len(block) - len(block) // 8:
            out.append(_chunk(_UNCOMPRESSED, crc, block))
        else:
            out.append(_chunk(_COMPRESSED, crc, packed))
    return b"".join(out)


def decompress_stream(data: bytes, *, max_size: int, need_identifier: bool = True) -> bytes:
    """Decode a whole framed stream (tests and tools; the server never reads snappy)."""
    out = bytearray()
    pos = 0
    seen_identifier = not need_identifier
    while pos < len(data):
        if len(data) - pos < 4:
            raise MalformedFrame("snappy: truncated chunk header")
        kind = data[pos]
        n = int.from_bytes(data[pos + 1 : pos + 4], "little")
        body = data[pos + 4 : pos + 4 + n]
        if len(body) != n:
            raise MalformedFrame("snappy: truncated chunk")
        pos += 4 + n
        if kind == 0xFF:
            if data[pos - 4 - n : pos] != STREAM_IDENTIFIER:
                raise MalformedFrame("snappy: bad stream identifier")
            seen_identifier = True
            continue
        if not seen_identifier:
            raise MalformedFrame("snappy: stream does not start with its identifier")
        if kind in (_COMPRESSED, _UNCOMPRESSED):
            if n < 4:
                raise MalformedFrame("snappy: data chunk without checksum")
            crc = int.from_bytes(body[:4], "little")
            if kind == _COMPRESSED:
                try:
                    block = bytes(cramjam.snappy.decompress_raw(body[4:]))
                except cramjam.DecompressionError:
                    raise MalformedFrame("snappy: corrupt block") from None
            else:
                block = bytes(body[4:])
            if len(block) > MAX_BLOCK:
                raise MalformedFrame("snappy: block larger than 64 KiB")
            if _masked_crc(block) != crc:
                raise MalformedFrame("snappy: checksum mismatch")
            out += block
            if len(out) > max_size:
                raise FrameTooLarge(f"snappy: stream exceeds {max_size} bytes")
        elif kind < 0x80:
            raise MalformedFrame(f"snappy: reserved unskippable chunk {kind:#x}")
        # 0x80-0xfe (padding included): skippable.
    return bytes(out)
