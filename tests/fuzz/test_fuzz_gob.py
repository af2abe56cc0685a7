"""Fuzzing the gob decoder and server session (Calico's protocol) with hypothesis.

Whatever a client sends, the session raises only ``ProtocolError`` (the connection closes)
and holds no more input than the bound. `make fuzz` sets TYPHA_FUZZ_EXAMPLES=100000; the
coverage-guided counterpart is the ``gob-server-stream`` atheris target.
"""

from __future__ import annotations

import contextlib
import random
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.budget import BUDGET, FUZZ
from typha.protocol import ProtocolError
from typha.protocol.gob import (
    ClientHello,
    GobDecoder,
    GobServerSession,
    GoTime,
    Pong,
    SnapshotReady,
)

from ..protocol.gob.golike import gob_client_streams
from ..protocol.gob.oracle import Oracle
from ..protocol.gob.oracle import oracle as oracle  # the Go oracle fixture

# Each differential case is a round trip to the Go process: a smaller share of the budget.
FUZZ_DIFF = settings(FUZZ, max_examples=max(BUDGET // 6, 100))
SEEDS = gob_client_streams()
HANDSHAKE_CAP = 64 << 10


def mutate(data: bytes, rng: random.Random, n: int) -> bytes:
    """Byte edits biased to gob's interesting count bytes, plus copied runs (lengths, ids)."""
    buf = bytearray(data)
    for _ in range(n):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes([rng.choice([0, 1, 0x7F, 0x80, 0xFD, 0xFF, rng.randrange(256)])])
        elif op == 2 and buf:
            del buf[min(pos, len(buf) - 1)]
        elif buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randrange(1, 16)]
    return bytes(buf)


def run_session(data: bytes, cuts: list[int]) -> GobServerSession:
    """Feed ``data`` in pieces, driving the session through its snapshot when asked."""
    session = GobServerSession(server_version="f", conn_id=1)
    with contextlib.suppress(ProtocolError):
        pos = 0
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            session.receive_data(data[pos:cut])
            while (event := session.next_event()) is not None:
                if isinstance(event, SnapshotReady):
                    session.send_snapshot([])
                    session.end_snapshot()
            pos = max(pos, cut)
            assert session.buffered <= (1 << 20)
    return session


def test_seeds_reach_streaming_and_pongs() -> None:
    """Positive control: unmutated seeds get through the handshake (the fuzz explores past it)."""
    for seed in SEEDS:
        assert run_session(seed, []).can_stream


@FUZZ
@given(st.integers(0, 2**32), st.integers(1, 8), st.lists(st.integers(0, 10**6), max_size=4))
def test_mutated_client_streams_raise_only_protocol_errors(seed: int, n: int, cuts) -> None:
    rng = random.Random(seed)
    run_session(mutate(rng.choice(SEEDS), rng, n), cuts)


@FUZZ
@given(st.binary(max_size=800), st.lists(st.integers(0, 10**6), max_size=3))
def test_random_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    session = run_session(data, cuts)
    # Before a hello is accepted, at most the handshake cap is held.
    if not session.syncer_type:
        assert session.buffered <= HANDSHAKE_CAP


# --- differential: our decoder against Go's, on mutated client streams -----------------------

# Our deliberate limits beyond Go's decoder (docs/protocol.md 8.7), by error text. Go also
# tolerates bytes left in a message after a value (it reads on from them), does not check that
# a definition repeats its own id, and keeps a time's out-of-range nanoseconds; we refuse these.
STRICTER = (
    "limit",
    "exceeds",
    "nested",
    "spans more than",
    "type definitions",
    "interface values",
    "extra data",
    "carries id",
    "nanoseconds out of range",
    "(gob-internal) is not accepted",
)
_REPLACEMENT_RUNS = re.compile("\ufffd+")


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return _REPLACEMENT_RUNS.sub("\ufffd", value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _go_time(t: GoTime | None) -> list[int] | None:
    if t is None:
        return None
    sec, nsec = divmod(t.unix_nanos, 1_000_000_000)
    return [sec + 62_135_596_800, nsec]  # seconds since year 1, as gobcheck prints them


def _as_go(msg: object) -> dict[str, Any]:
    if isinstance(msg, ClientHello):
        return {
            "type": "MsgClientHello",
            "Hostname": msg.hostname,
            "Info": msg.info,
            "Version": msg.version,
            "SyncerType": msg.syncer_type,
            "SupportsDecoderRestart": msg.supports_decoder_restart,
            "SupportedCompressionAlgorithms": list(msg.supported_compression),
            "SupportsModernPolicyKeys": msg.supports_modern_policy_keys,
            "ClientConnID": msg.client_conn_id,
        }
    if isinstance(msg, Pong):
        return {
            "type": "MsgPong",
            "PingTimestamp": _go_time(msg.ping_timestamp),
            "PongTimestamp": _go_time(msg.pong_timestamp),
        }
    return {"type": "MsgACK"}


def _ours(data: bytes) -> tuple[list[dict[str, Any]], str | None]:
    dec = GobDecoder()
    dec.feed(data)
    out: list[dict[str, Any]] = []
    try:
        while (msg := dec.next_message()) is not None:
            out.append(_as_go(msg))
    except ProtocolError as exc:
        return out, exc.reason
    return out, ("incomplete" if dec.buffered else None)


_GO_SEEDS: list[bytes] = []


def _go_seeds(oracle: Oracle) -> list[bytes]:
    """Streams written by Go's own encoder (Calico's client messages), made once."""
    if not _GO_SEEDS:
        hello = {
            "type": "MsgClientHello",
            "Hostname": "node-1",
            "SyncerType": "felix",
            "SupportsDecoderRestart": True,
            "SupportedCompressionAlgorithms": ["snappy"],
            "SupportsModernPolicyKeys": True,
            "ClientConnID": 12345678901,
        }
        pong = {"type": "MsgPong", "PingTimestamp": 1_700_000_000_123_456_789}
        for msgs in ([hello, {"type": "MsgACK"}, {"type": "MsgACK"}, pong], [hello, pong, pong]):
            _GO_SEEDS.append(oracle.encode_client(msgs)[0])
    return _GO_SEEDS


@FUZZ_DIFF
@given(st.integers(0, 2**32), st.integers(1, 6))
def test_differential_against_gos_decoder(oracle: Oracle, seed: int, n: int) -> None:
    rng = random.Random(seed)
    data = mutate(rng.choice(SEEDS + _go_seeds(oracle)), rng, n)
    ours, our_error = _ours(data)
    go = oracle.decode_client(data)
    go_msgs = _norm(go.get("messages") or [])
    ours = _norm(ours)
    if our_error is None:
        # Whatever we accept, Go accepts and reads the same way.
        assert go["ok"], (go.get("error"), ours)
        assert go_msgs == ours
        return
    # We refused: Go read the same messages before that point...
    assert go_msgs[: len(ours)] == ours
    # ...and refused too, or reached something a client may not send, or we hit a limit of ours.
    if go["ok"] and all(m["type"] in ("MsgClientHello", "MsgPong", "MsgACK") for m in go_msgs):
        assert any(s in our_error for s in STRICTER), (our_error, go_msgs)
