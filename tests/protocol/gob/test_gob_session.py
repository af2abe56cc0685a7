"""The server session: handshake rules, decoder restarts, ping/pong — with Go's own client
messages, Go's decoder reading what we write, and Calico's real syncclient on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from typing import Any

import pytest

from typha.protocol.errors import FrameTooLarge, HandshakeRejected, UnexpectedMessage
from typha.protocol.gob import (
    Ack,
    GobServerSession,
    GoTime,
    HelloAccepted,
    Pong,
    PongReceived,
    SerializedUpdate,
    SnapshotReady,
    State,
    StreamingReady,
    SyncStatus,
    kvs_part,
)
from typha.protocol.gob.session import RESTART_REASON

from .golike import GoLikeClientEncoder
from .oracle import Oracle, require_gobcheck
from .streams import expect_kvs, expect_ping, expect_restart, expect_status, hello


def _go_hello(oracle: Oracle, **fields: Any) -> bytes:
    msg = {
        "type": "MsgClientHello",
        "Hostname": "node-1",
        "SyncerType": "felix",
        "SupportsDecoderRestart": True,
        "SupportedCompressionAlgorithms": ["snappy"],
        "SupportsModernPolicyKeys": True,
        "ClientConnID": 11,
    }
    msg.update(fields)
    data, _ = oracle.encode_client([msg])
    return data


def test_hello_gets_a_server_hello_echoing_the_syncer(oracle: Oracle) -> None:
    s = GobServerSession(server_version="v9", conn_id=4)
    events = s.events(_go_hello(oracle, SyncerType="bgp", SupportsDecoderRestart=False))
    assert [type(e) for e in events] == [HelloAccepted, SnapshotReady]
    assert events[0].syncer_type == "bgp" and events[0].compression == ""
    answer = oracle.decode_server([b"".join(s.data_to_send())])
    assert answer["ok"], answer.get("error")
    assert answer["messages"] == [
        {
            "type": "MsgServerHello",
            "Version": "v9",
            "SyncerType": "bgp",
            "SupportsNodeResourceUpdates": True,
            "ServerConnID": 4,
        }
    ]


def test_empty_syncer_type_means_felix(oracle: Oracle) -> None:
    s = GobServerSession(server_version="v", conn_id=1)
    s.events(_go_hello(oracle, SyncerType=""))
    assert s.syncer_type == "felix"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"SyncerType": "no-such-syncer"}, "unknown syncer"),
        ({"SupportsModernPolicyKeys": False}, "modern policy keys"),
    ],
)
def test_rejected_hellos_get_no_server_hello(oracle: Oracle, fields: dict, why: str) -> None:
    s = GobServerSession(server_version="v", conn_id=1)
    with pytest.raises(HandshakeRejected, match=why):
        s.events(_go_hello(oracle, **fields))
    assert s.data_to_send() == []
    # Positive control: the same hello without the offending field is answered.
    ok = GobServerSession(server_version="v", conn_id=1)
    ok.events(_go_hello(oracle))
    assert ok.data_to_send()


def test_first_message_must_be_a_hello(oracle: Oracle) -> None:
    data, _ = oracle.encode_client([{"type": "MsgACK"}])
    s = GobServerSession(server_version="v", conn_id=1)
    with pytest.raises(UnexpectedMessage, match="hello"):
        s.events(data)
    assert s.data_to_send() == []


def test_handshake_input_is_capped_until_the_hello_is_accepted() -> None:
    # Three strings at the 1 KiB cap on hello strings (hello_limits.py): a ~3 KB hello.
    big = GoLikeClientEncoder().encode(
        hello(info="i" * 1024, version="v" * 1024, hostname="h" * 1024)
    )
    s = GobServerSession(server_version="v", conn_id=1, handshake_max_message=len(big) - 1)
    with pytest.raises(FrameTooLarge, match="exceeds"):
        s.events(big)
    ok = GobServerSession(server_version="v", conn_id=1, handshake_max_message=len(big))
    assert ok.events(big)


def test_compression_only_with_decoder_restart(oracle: Oracle) -> None:
    s = GobServerSession(server_version="v", conn_id=1)
    s.events(_go_hello(oracle, SupportsDecoderRestart=False))
    assert s.compression == "" and s.state is State.SNAPSHOT
    snappy = GobServerSession(server_version="v", conn_id=1)
    snappy.events(_go_hello(oracle))
    assert snappy.compression == "snappy" and snappy.state is State.AWAIT_ACK_HELLO
    off = GobServerSession(server_version="v", conn_id=1, allow_snappy=False)
    off.events(_go_hello(oracle))
    assert off.compression == "" and off.state is State.SNAPSHOT


KVS = [
    SerializedUpdate(f"/calico/v1/host/node-1/config/K{i}", b"v", str(i), "", 0, 1)
    for i in range(5)
]
DELTA = [SerializedUpdate("/calico/v1/config/LogSeverityScreen", b"Info", "77", "", 0, 2)]


@pytest.mark.parametrize("snappy", [True, False])
def test_whole_connection_as_go_reads_it(oracle: Oracle, snappy: bool) -> None:
    """Hello, restart + ACK, snapshot, restart + ACK, deltas, ping, pong (snappy), or the
    plain sequence; Go's decoder reads each segment exactly to its end."""
    enc = GoLikeClientEncoder()
    s = GobServerSession(server_version="v", conn_id=3)
    segments: list[bytes] = []
    s.events(enc.encode(hello(snappy)))
    if snappy:
        segments.append(b"".join(s.data_to_send()))
        with pytest.raises(RuntimeError):
            s.send_snapshot([])  # nothing new-format before the ACK
        assert s.events(enc.encode(Ack())) == [SnapshotReady()]
    s.send_snapshot([kvs_part(KVS[:3], 1000), kvs_part(KVS[3:], 1000)])
    events = s.end_snapshot()
    if snappy:
        assert events == []
        segments.append(b"".join(s.data_to_send()))
        assert s.events(enc.encode(Ack())) == [StreamingReady()]
    else:
        assert events == [StreamingReady()]
    s.send_status(SyncStatus.IN_SYNC)
    s.send(kvs_part(DELTA))
    ping = GoTime(1_700_000_000_000_000_000)
    s.send_ping(ping)
    segments.append(b"".join(s.data_to_send()))
    assert s.events(enc.encode(Pong(ping))) == [PongReceived(Pong(ping))]
    answer = oracle.decode_server(segments)
    assert answer["ok"], answer.get("error")
    messages = answer["messages"]
    assert messages[0]["type"] == "MsgServerHello"
    expected = [expect_kvs(KVS[:3]), expect_kvs(KVS[3:])]
    if snappy:
        expected = [
            expect_restart(RESTART_REASON, "snappy"),
            *expected,
            expect_restart("End of compressed snapshot.", "snappy"),
        ]
    expected += [expect_status(2), expect_kvs(DELTA), expect_ping(ping)]
    assert messages[1:] == expected


def test_only_ack_while_waiting_for_ack_and_only_pong_while_streaming() -> None:
    enc = GoLikeClientEncoder()
    s = GobServerSession(server_version="v", conn_id=1)
    s.events(enc.encode(hello(True)))
    with pytest.raises(UnexpectedMessage, match="ACK"):
        s.events(enc.encode(Pong(GoTime(1))))
    enc = GoLikeClientEncoder()
    streaming = GobServerSession(server_version="v", conn_id=1)
    streaming.events(enc.encode(hello(False)))
    streaming.send_snapshot([])
    streaming.end_snapshot()
    assert streaming.events(enc.encode(Pong(GoTime(1)))) == [PongReceived(Pong(GoTime(1)))]
    with pytest.raises(UnexpectedMessage):
        streaming.events(enc.encode(Ack()))


# --- Calico's real syncclient against the session, on loopback ------------------------------

CONFIG_KVS = [
    SerializedUpdate("/calico/v1/config/LogSeverityScreen", b"Info", "10", "", 0, 1),
    SerializedUpdate("/calico/v1/host/node-1/config/ReportingIntervalSecs", b"30", "11", "", 0, 1),
]
CONFIG_DELTA = [
    SerializedUpdate("/calico/v1/config/LogSeverityScreen", b"Debug", "12", "", 0, 2),
    SerializedUpdate("/calico/v1/host/node-1/config/ReportingIntervalSecs", None, "13", "", 0, 3),
]


def _serve_one(listener: socket.socket, result: dict[str, Any], snapshot: list) -> None:
    try:
        conn, _ = listener.accept()
        _drive(conn, result, snapshot)
    except OSError as exc:
        result["error"] = exc
    finally:
        result["served"].set()


PING = GoTime(1_700_000_000_123_456_789)


def _stream(s: GobServerSession) -> None:
    s.send_status(SyncStatus.IN_SYNC)
    s.send(kvs_part(CONFIG_DELTA))
    s.send_ping(PING)


def _drive(conn: socket.socket, result: dict[str, Any], snapshot: list) -> None:
    """The test's own I/O loop around the sans-IO session (the real adapter comes later)."""
    with conn:
        s = GobServerSession(server_version="typha-py-test", conn_id=21)
        while "pong" not in result:
            data = conn.recv(65536)
            if not data:
                break
            s.receive_data(data)
            while (event := s.next_event()) is not None:
                if isinstance(event, HelloAccepted):
                    result["hello"] = event.hello
                elif isinstance(event, SnapshotReady):
                    s.send_snapshot(
                        kvs_part(snapshot[i : i + 1000], 1000)
                        for i in range(0, len(snapshot), 1000)
                    )
                    if s.end_snapshot() == [StreamingReady()]:  # plain: no ACK to wait for
                        _stream(s)
                elif isinstance(event, StreamingReady):
                    _stream(s)
                elif isinstance(event, PongReceived):
                    result["pong"] = event.pong
            for chunk in s.data_to_send():
                conn.sendall(chunk)
        result["compression"] = s.compression


def _as_printed(u: SerializedUpdate) -> dict[str, Any]:
    """How gobcheck prints an update after Calico's client parsed and re-serialized it."""
    return {
        "key": u.key,
        "value": None if u.value is None else u.value.decode(),
        "revision": u.revision,
        "updateType": u.update_type,
    }


@pytest.mark.parametrize(("mode", "extra"), [("snappy", 0), ("plain", 0), ("snappy", 2500)])
def test_calico_syncclient_syncs_from_the_session(mode: str, extra: int) -> None:
    """Calico's client: hello, restarts, snapshot (2,500 more KVs: three shared chunks over
    many snappy chunks), in-sync, deltas, ping."""
    path = require_gobcheck()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, Any] = {"served": threading.Event()}
    snapshot = CONFIG_KVS + [
        SerializedUpdate(f"/calico/v1/host/node-{i}/config/Extra", f"v{i:0200}".encode(), str(i))
        for i in range(extra)
    ]
    server = threading.Thread(target=_serve_one, args=(listener, result, snapshot), daemon=True)
    server.start()
    args = [str(path), "client", f"127.0.0.1:{port}", "felix"] + (
        ["plain"] if mode == "plain" else []
    )
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        updates: list[dict[str, Any]] = []
        statuses: list[int] = []
        timer = threading.Timer(30, proc.kill)
        timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            updates += event.get("updates", [])
            if "status" in event:
                statuses.append(event["status"])
            if len(updates) >= len(snapshot) + 2 and 2 in statuses:
                break
        timer.cancel()
        assert result["served"].wait(20)  # the server got its pong
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        listener.close()
        server.join(10)
    assert "error" not in result
    assert result["hello"].supports_modern_policy_keys
    assert result["hello"].syncer_type == "felix"
    assert result["compression"] == ("snappy" if mode == "snappy" else "")
    assert statuses[-1] == 2  # in sync
    assert updates == [_as_printed(u) for u in snapshot + CONFIG_DELTA]
    assert updates[:2] == [
        {
            "key": "/calico/v1/config/LogSeverityScreen",
            "value": "Info",
            "revision": "10",
            "updateType": 1,
        },
        {
            "key": "/calico/v1/host/node-1/config/ReportingIntervalSecs",
            "value": "30",
            "revision": "11",
            "updateType": 1,
        },
    ]
    assert updates[-1]["value"] is None and updates[-1]["updateType"] == 3  # a deletion
    # Go's Pong carries only the ping's timestamp.
    assert result["pong"].ping_timestamp == PING
    assert result["pong"].pong_timestamp is None
