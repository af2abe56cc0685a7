"""Fuzzing the gob decoder and server session (Calico's protocol) with hypothesis.

Whatever a client sends, the session raises only ``ProtocolError`` (the connection closes)
and holds no more input than the bound. `make fuzz` sets TYPHA_FUZZ_EXAMPLES=100000; the
coverage-guided counterpart is the ``gob-server-stream`` atheris target.
"""

from __future__ import annotations

import contextlib
import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typha.protocol import ProtocolError
from typha.protocol.gob import GobServerSession, SnapshotReady

from ..protocol.gob.golike import gob_client_streams

BUDGET = int(os.environ.get("TYPHA_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(
    max_examples=BUDGET,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
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
