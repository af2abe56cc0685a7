"""typha/sync/etcd_pb.py (etcd's message descriptors, checked in) is what scripts/gen_etcd_pb.py
makes from etcd's own .proto files, and its messages encode as etcd's wire format says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from typha.sync import etcd_pb as pb

ROOT = Path(__file__).resolve().parent.parent


def _have_protoc_and_protos() -> str | None:
    if importlib.util.find_spec("grpc_tools") is None:
        return "grpcio-tools (extra grpc-bench) is not installed"
    from load.etcd_grpc_stubs import find_api_module

    try:
        find_api_module()
    except Exception as exc:  # no module cache and no Go toolchain
        return f"etcd's Go API module is not available: {exc}"
    return None


def test_regenerating_gives_the_checked_in_module() -> None:
    if (why := _have_protoc_and_protos()) is not None:
        pytest.skip(why)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_etcd_pb.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_messages_use_etcds_field_numbers() -> None:
    """A few encodings spelled out by hand from rpc.proto/kv.proto's field numbers: a wrong or
    stale descriptor would change them."""
    # RangeRequest: key=1 (bytes), range_end=2, limit=3, revision=4, keys_only=8.
    req = pb.RangeRequest(key=b"/a", range_end=b"/b", limit=5, revision=7, keys_only=True)
    assert req.SerializeToString() == b"\x0a\x02/a\x12\x02/b\x18\x05\x20\x07\x40\x01"
    # WatchRequest.create_request=1 { key=1, start_revision=3, progress_notify=4, prev_kv=6 }.
    create = pb.WatchCreateRequest(key=b"k", start_revision=2, progress_notify=True, prev_kv=True)
    wire = pb.WatchRequest(create_request=create).SerializeToString()
    assert wire == b"\x0a\x09\x0a\x01k\x18\x02\x20\x01\x30\x01"
    # WatchResponse: header=1 {revision=3}, created=3, canceled=4, compact_revision=5,
    # events=11 { type=1 (DELETE=1), kv=2 { key=1, mod_revision=3 } }.
    raw = b"\x0a\x02\x18\x09\x20\x01\x28\x04\x5a\x07\x08\x01\x12\x03\x0a\x01k"
    resp = pb.WatchResponse.FromString(raw)
    assert (resp.header.revision, resp.canceled, resp.compact_revision) == (9, True, 4)
    assert resp.events[0].type == pb.Event.DELETE and resp.events[0].kv.key == b"k"
    # Positive control: an empty message is empty on the wire.
    assert pb.WatchResponse().SerializeToString() == b""
