"""gRPC's message framing over an HTTP/2 stream's DATA, for ``load.grpc_h2`` (kept apart from
it so that it needs neither h2 nor protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio


class GrpcError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"grpc-status {status}: {message}")
        self.status = status


@dataclass
class GrpcCall:
    """One call's receive side: complete messages (or the error that ended the call) go to
    ``send``; the caller reads them from ``receive``."""

    send: trio.MemorySendChannel[bytes | BaseException]
    receive: trio.MemoryReceiveChannel[bytes | BaseException]
    buffer: bytearray = field(default_factory=bytearray)
    stream_id: int = 0

    def feed(self, data: bytes) -> None:
        """Append DATA and hand on every complete gRPC message (1-byte flag, 4-byte length)."""
        buf = self.buffer
        buf += data
        start = 0
        while len(buf) - start >= 5:
            length = int.from_bytes(buf[start + 1 : start + 5], "big")
            if len(buf) - start - 5 < length:
                break
            if buf[start]:
                raise GrpcError(12, "compressed message received but none negotiated")
            self.send.send_nowait(bytes(buf[start + 5 : start + 5 + length]))
            start += 5 + length
        if start:
            del buf[:start]


def frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message
