"""gRPC message framing in load/grpc_framing.py (the gateway-vs-gRPC benchmark's trio client):
messages split across DATA frames, several in one frame, and the compressed flag refused."""

from __future__ import annotations

import math

import pytest
import trio

from load.grpc_framing import GrpcCall, GrpcError, frame


def new_call() -> GrpcCall:
    send, receive = trio.open_memory_channel[bytes | BaseException](math.inf)
    return GrpcCall(send, receive)


def drained(call: GrpcCall) -> list[bytes | BaseException]:
    out = []
    while True:
        try:
            out.append(call.receive.receive_nowait())
        except trio.WouldBlock:
            return out


def test_frame_is_flag_length_message() -> None:
    assert frame(b"abc") == b"\0\0\0\0\3abc"
    assert frame(b"") == b"\0\0\0\0\0"


def test_messages_split_and_joined_across_data_frames() -> None:
    big = bytes(range(256)) * 300  # 76,800 bytes: longer than one 16 KB DATA frame
    stream = frame(b"one") + frame(b"") + frame(big) + frame(b"last")
    call = new_call()
    # Feed in awkward pieces: inside the 5-byte prefix, inside a message, several at once.
    cuts = [2, 9, 11, 30, 16_000, 40_000, 76_000, len(stream)]
    start = 0
    seen: list[bytes | BaseException] = []
    for cut in cuts:
        call.feed(stream[start:cut])
        seen += drained(call)
        start = cut
    assert seen == [b"one", b"", big, b"last"]
    assert call.buffer == bytearray()


def test_incomplete_message_waits_for_the_rest() -> None:
    call = new_call()
    call.feed(frame(b"hello")[:-1])
    assert drained(call) == []
    call.feed(b"o")
    assert drained(call) == [b"hello"]


def test_compressed_flag_is_refused() -> None:
    call = new_call()
    with pytest.raises(GrpcError, match="compressed"):
        call.feed(b"\1\0\0\0\1x")
