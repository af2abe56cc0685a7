"""typha/sync/grpc_h2.py's message framing and status reading (pure; the transport itself
runs against a real etcd in tests/sync/test_etcd_grpc_*.py)."""

from __future__ import annotations

import pytest

from typha.sync.grpc_h2 import INTERNAL, GrpcError, _Call, _status_error, frame

MESSAGES = [b"", b"a", b"\x00" * 300, bytes(range(256)) * 100]


@pytest.mark.parametrize("split", [1, 2, 4, 5, 6, 17, 1000, 1 << 20])
def test_messages_survive_any_split_of_the_data(split: int) -> None:
    wire = b"".join(frame(m) for m in MESSAGES)
    call = _Call(1)
    for i in range(0, len(wire), split):
        call.feed(wire[i : i + split])
    assert list(call.messages) == MESSAGES
    assert call.buffer == b""  # nothing left over
    # A message cut short stays buffered until its last byte arrives.
    call = _Call(1)
    call.feed(frame(b"hello")[:-1])
    assert not call.messages and len(call.buffer) == 9
    call.feed(b"o")
    assert list(call.messages) == [b"hello"]


def test_a_compressed_message_is_refused() -> None:
    call = _Call(1)
    call.feed(frame(b"ok"))  # positive control
    with pytest.raises(GrpcError, match="compressed"):
        call.feed(b"\x01" + frame(b"zz")[1:])
    assert list(call.messages) == [b"ok"]


def test_status_from_headers() -> None:
    assert _status_error({b"grpc-status": b"0"}) is None
    err = _status_error({b"grpc-status": b"11", b"grpc-message": b"required revision compacted"})
    assert err is not None and err.status == 11 and err.message == "required revision compacted"
    missing = _status_error({b":status": b"200"})
    assert missing is not None and missing.status == INTERNAL
