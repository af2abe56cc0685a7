"""Length-prefixed frames and the receive buffer that splits a byte stream into them.

Frame layout (all integers big-endian)::

    +----------------+-----------+---------------------------+
    | length: uint32 | flags: u8 | payload (length bytes)    |
    +----------------+-----------+---------------------------+

``length`` counts the payload only. Flag bit 0 set means the payload is one zstd frame whose
content is the msgpack message; all other flag bits are reserved and must be zero. Frames are
compressed independently (no compression context spans frames), so a compressed frame can be
built once and sent to every client.
"""

from __future__ import annotations

import threading

import zstandard

from .errors import FrameTooLarge, MalformedFrame

HEADER_SIZE = 5
FLAG_ZSTD = 0x01
_KNOWN_FLAGS = FLAG_ZSTD

# The server accepts at most this much from a client in one frame (Typha: 1 MiB, #12479).
SERVER_MAX_INBOUND_FRAME = 1 << 20
# Default cap on a frame a client accepts (after decompression). Configurable per client.
CLIENT_DEFAULT_MAX_FRAME = 64 << 20

# zstd level 1: on 2 cores the snapshot must compress faster than loopback can send it.
# A compressor context is not thread-safe, and snapshots are compressed in worker threads
# while the event loop compresses deltas: one context per thread.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    ctx = getattr(_local, "cctx", None)
    if ctx is None:
        ctx = _local.cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    return ctx


def frame(payload: bytes, flags: int = 0) -> bytes:
    """Wrap a payload into a frame."""
    return len(payload).to_bytes(4, "big") + bytes((flags,)) + payload


def compressed_frame(payload: bytes) -> bytes:
    """A frame whose payload is zstd-compressed once (to be shared by many connections)."""
    return frame(_compressor().compress(payload), FLAG_ZSTD)


def best_frame(payload: bytes, *, min_size: int = 512) -> bytes:
    """The compressed frame if compression pays off, else the plain one."""
    if len(payload) < min_size:
        return frame(payload)
    packed = _compressor().compress(payload)
    if len(packed) >= len(payload):
        return frame(payload)
    return frame(packed, FLAG_ZSTD)


class FrameDecoder:
    """A receive buffer: feed bytes, take complete frame payloads out.

    Knows nothing about messages. ``max_frame`` caps both the declared length and, for
    compressed frames, the decompressed size; ``allow_compressed`` is False on the server
    (clients never compress).
    """

    def __init__(self, max_frame: int, *, allow_compressed: bool = True) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_frame = max_frame
        self._allow_compressed = allow_compressed
        self._dctx = zstandard.ZstdDecompressor() if allow_compressed else None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def discard(self) -> None:
        """Drop whatever is buffered (the connection is over): its memory is freed now."""
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_payload(self) -> bytes | None:
        """The next complete (decompressed) payload, or None if more bytes are needed."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            self._compact()
            return None
        length = int.from_bytes(buf[pos : pos + 4], "big")
        flags = buf[pos + 4]
        if length > self._max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self._max_frame}")
        if flags & ~_KNOWN_FLAGS:
            raise MalformedFrame(f"unknown frame flags {flags:#x}")
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            self._compact()
            return None
        with memoryview(buf) as view:
            payload = bytes(view[pos + HEADER_SIZE : end])
        self._pos = end
        if flags & FLAG_ZSTD:
            if not self._allow_compressed or self._dctx is None:
                raise MalformedFrame("compressed frames are not allowed in this direction")
            payload = self._decompress(payload)
        return payload

    def _decompress(self, payload: bytes) -> bytes:
        assert self._dctx is not None
        try:
            params = zstandard.get_frame_parameters(payload)
        except zstandard.ZstdError:
            raise MalformedFrame("invalid zstd frame") from None
        size = params.content_size
        if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
            raise MalformedFrame("zstd frame must declare its content size")
        if size > self._max_frame:
            raise FrameTooLarge(
                f"decompressed frame of {size} bytes exceeds the limit of {self._max_frame}"
            )
        try:
            out = self._dctx.decompress(payload, max_output_size=self._max_frame)
        except zstandard.ZstdError:
            raise MalformedFrame("corrupt zstd frame") from None
        if len(out) != size:
            raise MalformedFrame("zstd frame size does not match its header")
        return out

    def _compact(self) -> None:
        # Drop consumed bytes only when they dominate, so that a stream of small frames does
        # not memmove the whole buffer on every frame.
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
