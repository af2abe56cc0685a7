"""Helpers shared by the gob tests: random messages and what Go should decode from them."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import strategies as st

from typha.protocol.gob import (
    Ack,
    ClientHello,
    GobServerSession,
    GoTime,
    SerializedUpdate,
    ServerHello,
    State,
)

from .golike import GoLikeClientEncoder

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)

updates = st.builds(
    SerializedUpdate,
    key=_text,
    value=st.none() | st.binary(max_size=300),
    revision=st.none() | _text,
    v3_resource_version=_text,
    ttl_nanos=st.integers(-(2**63), 2**63 - 1),
    update_type=st.integers(0, 3),
)

go_times = st.builds(GoTime, st.integers(-(2**62), 2**62))


def expect_kvs(kvs: list[SerializedUpdate]) -> dict[str, Any]:
    """What gobcheck prints for a MsgKVs carrying ``kvs`` (gob drops empty byte slices)."""
    return {
        "type": "MsgKVs",
        "KVs": [
            {
                "Key": u.key,
                "Value": base64.b64encode(u.value).decode() if u.value else None,
                "Revision": u.revision,
                "V3ResourceVersion": u.v3_resource_version,
                "TTL": u.ttl_nanos,
                "UpdateType": u.update_type,
            }
            for u in kvs
        ],
    }


def expect_server_hello(h: ServerHello) -> dict[str, Any]:
    return {
        "type": "MsgServerHello",
        "Version": h.version,
        "SyncerType": h.syncer_type,
        "SupportsNodeResourceUpdates": h.supports_node_resource_updates,
        "ServerConnID": h.server_conn_id,
    }


def expect_status(status: int) -> dict[str, Any]:
    return {"type": "MsgSyncStatus", "SyncStatus": status}


def expect_ping(t: GoTime) -> dict[str, Any]:
    return {"type": "MsgPing", "Timestamp": t.unix_nanos}


def expect_restart(message: str, compression: str) -> dict[str, Any]:
    return {"type": "MsgDecoderRestart", "Message": message, "CompressionAlgorithm": compression}


def hello(snappy: bool = True, **kw: Any) -> ClientHello:
    """A hello as Calico's client sends it (snappy offered unless told otherwise)."""
    fields: dict[str, Any] = {
        "hostname": "node-1",
        "info": "test",
        "version": "v3",
        "syncer_type": "felix",
        "supports_decoder_restart": snappy,
        "supported_compression": ("snappy",) if snappy else (),
        "supports_modern_policy_keys": True,
        "client_conn_id": 7,
    }
    fields.update(kw)
    return ClientHello(**fields)


def streaming_session(snappy: bool, conn_id: int = 1) -> GobServerSession:
    """A session through hello, (empty) snapshot and restarts, its output so far discarded."""
    enc = GoLikeClientEncoder()
    s = GobServerSession(server_version="t", conn_id=conn_id)
    s.events(enc.encode(hello(snappy)))
    if snappy:
        s.events(enc.encode(Ack()))
    s.send_snapshot([])
    s.end_snapshot()
    if snappy:
        s.events(enc.encode(Ack()))
    assert s.state is State.STREAMING
    s.data_to_send()
    return s
