"""ClientSession, the one client state machine behind the node agent, the load tool and the
tests' raw client: bytes in, events out, no I/O."""

from __future__ import annotations

import dataclasses
import random

import pytest

from typha.protocol import (
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    FEATURE_RESUME,
    BatchDone,
    BatchEnd,
    ClientSession,
    ConnectionEnded,
    Goodbye,
    GoodbyeReceived,
    Handshake,
    KVBatch,
    KVKind,
    KVs,
    Ping,
    Pinged,
    Pong,
    ProtocolError,
    ResumeToken,
    ServerHello,
    ServerProtocol,
    StatusChanged,
    SyncStatus,
    SyncStatusMsg,
    best_frame,
    encode_payload,
    frame,
)
from typha.protocol.codec import decode_payload
from typha.protocol.framing import FrameDecoder

FEATURES = (FEATURE_CATCHUP, FEATURE_GOODBYE, FEATURE_RESUME)


def f(msg: object, *, compress: bool = False) -> bytes:
    payload = encode_payload(msg)  # type: ignore[arg-type]
    return best_frame(payload, min_size=0) if compress else frame(payload)


def hello(*, resumed: bool = False, resume_seq: int | None = None, epoch: int = 7) -> bytes:
    return f(
        ServerHello(
            "t",
            epoch=epoch,
            syncer="felix",
            features=FEATURES,
            resumed=resumed,
            resume_seq=resume_seq,
            compression="zstd",
        )
    )


def snapshot(kvs: dict[str, object], seq: int = 3, rev: int = 10) -> bytes:
    return (
        f(KVs(KVKind.SNAPSHOT, seq, rev, tuple(kvs.items())))
        + f(BatchDone(KVKind.SNAPSHOT, seq, rev, len(kvs)))
        + f(SyncStatusMsg(SyncStatus.IN_SYNC))
    )


def events(session: ClientSession, data: bytes) -> list[object]:
    session.receive_data(data)
    out = []
    while (ev := session.next_event()) is not None:
        out.append(ev)
    return out


def sent_hello(data: bytes):  # type: ignore[no-untyped-def]
    server = ServerProtocol()
    server.receive_data(data)
    return server.next_event()


def test_snapshot_then_deltas_track_position_state_and_status() -> None:
    s = ClientSession("n1", features=FEATURES)
    assert sent_hello(s.connect()).resume is None
    evs = events(s, hello() + snapshot({"a": 1, "b": 2}))
    assert [type(e) for e in evs] == [Handshake, KVBatch, BatchEnd, StatusChanged]
    assert s.state == {"a": 1, "b": 2} and s.in_sync and s.status is SyncStatus.IN_SYNC
    assert s.position == ResumeToken(7, 3, 10)
    evs = events(s, f(KVs(KVKind.DELTA, 4, 11, (("a", None), ("c", 3)))))
    assert isinstance(evs[0], KVBatch) and evs[0].count == 2
    assert s.state == {"b": 2, "c": 3} and s.position == ResumeToken(7, 4, 11)


def test_a_pong_carries_the_position() -> None:
    s = ClientSession("n1", features=FEATURES)
    s.connect()
    evs = events(s, hello() + snapshot({"a": 1}) + f(Ping(99)))
    assert isinstance(evs[-1], Pinged)
    dec = FrameDecoder(1 << 20, allow_compressed=False)
    dec.feed(s.data_to_send())
    assert decode_payload(dec.next_payload() or b"") == Pong(99, 3)
    assert s.data_to_send() == b""


def test_the_next_hello_resumes_and_a_new_snapshot_deletes_what_it_does_not_list() -> None:
    s = ClientSession("n1", features=FEATURES)
    s.connect()
    events(s, hello() + snapshot({"a": 1, "b": 2, "c": 3}))
    s.connection_lost()
    assert not s.in_sync and s.status is SyncStatus.IN_SYNC  # the last word stays known
    # The next hello offers the position; the server resumes from where it says.
    assert sent_hello(s.connect()).resume == ResumeToken(7, 3, 10)
    evs = events(s, hello(resumed=True, resume_seq=5, epoch=8))
    assert isinstance(evs[0], Handshake) and evs[0].resumed and s.position == ResumeToken(8, 5, 10)
    # Another reconnect the server cannot resume: a snapshot without "b" deletes it, keeps "a"
    # and "c" (listed), and moves to the snapshot's epoch only at its end.
    s.connect()
    evs = events(s, hello(epoch=9) + f(KVs(KVKind.SNAPSHOT, 2, 20, (("a", 1), ("c", 4)))))
    assert s.epoch == 8 and s.in_snapshot
    evs = events(s, f(BatchDone(KVKind.SNAPSHOT, 2, 20, 2)))
    assert isinstance(evs[0], BatchEnd) and evs[0].deleted == ("b",)
    assert s.state == {"a": 1, "c": 4} and s.position == ResumeToken(9, 2, 20)


def test_without_resume_the_hello_offers_no_token_but_a_test_may_force_one() -> None:
    s = ClientSession("n1", features=FEATURES, resume=False)
    s.connect()
    events(s, hello() + snapshot({"a": 1}))
    assert sent_hello(s.connect()).resume is None
    assert sent_hello(s.connect(resume=ResumeToken(1, 2))).resume == ResumeToken(1, 2)


@pytest.mark.parametrize("header_only", [False, True])
def test_end_of_file_ends_the_connection(header_only: bool) -> None:
    s = ClientSession("n1", features=FEATURES, header_only=header_only)
    s.connect()
    evs = events(s, hello() + snapshot({"a": 1}))
    assert isinstance(evs[-1], StatusChanged)
    evs = events(s, b"")
    assert evs == [ConnectionEnded("Typha closed the connection", False)]
    assert not s.in_sync and s.next_event() is None
    # After a Goodbye the end of file is the expected one.
    s.connect()
    evs = events(s, hello(resumed=True, resume_seq=3) + f(Goodbye("drain", 1.0, "h:1")))
    assert isinstance(evs[-1], GoodbyeReceived) and evs[-1].message.address == "h:1"
    assert events(s, b"") == [
        ConnectionEnded("Typha closed the connection after its Goodbye", True)
    ]


@pytest.mark.parametrize("header_only", [False, True])
def test_nothing_may_follow_a_goodbye(header_only: bool) -> None:
    s = ClientSession("n1", features=FEATURES, header_only=header_only)
    s.connect()
    # Positive control: a ping before the Goodbye is fine.
    s.receive_data(hello() + snapshot({"a": 1}) + f(Ping(1)) + f(Goodbye("bye")) + f(Ping(2)))
    got = []
    with pytest.raises(ProtocolError, match="after Goodbye"):
        while (ev := s.next_event()) is not None:
            got.append(type(ev))
    # Every event before the offending message came out first.
    assert got[-2:] == [Pinged, GoodbyeReceived]
    assert s.next_event() is None


@pytest.mark.parametrize("header_only", [False, True])
def test_a_snapshot_whose_total_differs_is_a_protocol_error(header_only: bool) -> None:
    s = ClientSession("n1", features=FEATURES, header_only=header_only)
    s.connect()
    s.receive_data(
        hello()
        + f(KVs(KVKind.SNAPSHOT, 3, 10, tuple((f"k{i}", "x" * 80) for i in range(3))))
        + f(BatchDone(KVKind.SNAPSHOT, 3, 10, 4))
    )
    assert isinstance(s.next_event(), Handshake)
    assert isinstance(s.next_event(), KVBatch)
    with pytest.raises(ProtocolError, match="snapshot carried 3 KVs, server says 4"):
        s.next_event()


@pytest.mark.parametrize("header_only", [False, True])
def test_snapshot_data_outside_a_snapshot_is_a_protocol_error(header_only: bool) -> None:
    s = ClientSession("n1", features=FEATURES, header_only=header_only)
    s.connect()
    s.receive_data(hello(resumed=True, resume_seq=1) + f(KVs(KVKind.SNAPSHOT, 3, 10, (("k", 1),))))
    assert isinstance(s.next_event(), Handshake)
    with pytest.raises(ProtocolError, match="outside a snapshot"):
        s.next_event()


def test_a_catch_up_the_client_did_not_offer_is_refused_in_both_modes() -> None:
    no_catchup = f(ServerHello("t", epoch=7, syncer="felix", features=(FEATURE_GOODBYE,)))
    catchup = f(KVs(KVKind.CATCHUP, 5, 12, tuple((f"k{i}", "v" * 40) for i in range(3))))
    for header_only in (False, True):
        s = ClientSession("n1", features=(FEATURE_GOODBYE,), header_only=header_only)
        s.connect()
        s.receive_data(no_catchup + catchup)
        assert isinstance(s.next_event(), Handshake)
        with pytest.raises(ProtocolError, match="catch-up"):
            s.next_event()


def _stream(rng: random.Random) -> tuple[bytes, int]:
    """A snapshot, deltas (some compressed), a catch-up and pings; and the delta KV count."""
    kvs = {f"k{i}": {"v": i, "pad": "x" * 50} for i in range(40)}
    parts = [hello(), snapshot(kvs)]
    deltas = 0
    seq = 3
    for _ in range(30):
        seq += 1
        batch = tuple((f"k{rng.randrange(40)}", rng.choice([None, {"v": seq}])) for _ in range(3))
        deltas += len(batch)
        parts.append(f(KVs(KVKind.DELTA, seq, 10 + seq, batch), compress=rng.random() < 0.3))
        if rng.random() < 0.2:
            parts.append(f(Ping(seq)))
    changed = tuple((f"k{i}", {"v": -i}) for i in range(5))
    parts.append(f(KVs(KVKind.CATCHUP, seq + 5, 99, changed), compress=True))
    parts.append(f(BatchDone(KVKind.CATCHUP, seq + 5, 99, len(changed))))
    return b"".join(parts), deltas


@pytest.mark.parametrize("seed", range(5))
def test_header_only_and_full_agree_on_position_and_counts_at_any_split(seed: int) -> None:
    rng = random.Random(seed)
    data, deltas = _stream(rng)
    results = []
    for header_only in (False, True):
        s = ClientSession("n1", features=FEATURES, header_only=header_only, keep_state=False)
        s.connect()
        counts = {KVKind.DELTA: 0, KVKind.SNAPSHOT: 0, KVKind.CATCHUP: 0}
        ends = []
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 3, 17, 200, 5000])
            for ev in events(s, data[pos : pos + n]):
                if isinstance(ev, KVBatch):
                    counts[ev.kind] += ev.count
                    assert (ev.kvs is None) is header_only
                elif isinstance(ev, BatchEnd):
                    ends.append(ev.kind)
            pos += n
        results.append((s.position, counts, ends, s.data_to_send()))
    assert results[0] == results[1]
    position, counts, ends, _ = results[0]
    assert counts == {KVKind.DELTA: deltas, KVKind.SNAPSHOT: 40, KVKind.CATCHUP: 5}
    assert ends == [KVKind.SNAPSHOT, KVKind.CATCHUP] and position is not None
    assert position.revision == 99


def test_header_only_mode_hands_over_the_payloads_the_sampler_picks() -> None:
    picked = []

    def sampler(count: int) -> int:
        picked.append(count)
        return 1

    s = ClientSession("n1", features=FEATURES, header_only=True, sampler=sampler)
    s.connect()
    events(s, hello() + snapshot({"a": 1}))
    delta = KVs(KVKind.DELTA, 4, 11, tuple((f"k{i}", "v" * 30) for i in range(4)))
    (ev,) = events(s, f(delta))
    assert isinstance(ev, KVBatch) and ev.samples == 1 and picked == [4]
    assert ev.payload is not None and decode_payload(ev.payload) == delta
    # Not in sync (a fresh connection before its status): nothing is sampled.
    s.connect()
    events(s, hello(resumed=True, resume_seq=4))
    (ev,) = events(s, f(KVs(KVKind.DELTA, 5, 12, delta.kvs)))
    assert ev.payload is None and ev.samples == 0 and picked == [4]


def test_header_only_mode_merges_unsampled_deltas_and_keeps_the_last_position() -> None:
    s = ClientSession("n1", features=FEATURES, header_only=True, sampler=lambda count: 0)
    s.connect()
    events(s, hello() + snapshot({"a": 1}))
    kvs = tuple((f"k{i}", "v" * 30) for i in range(3))
    deltas = b"".join(f(KVs(KVKind.DELTA, seq, 10 + seq, kvs)) for seq in range(4, 9))
    (ev,) = events(s, deltas + f(Ping(1)))[:1]
    assert (ev.frames, ev.count, ev.seq, ev.revision) == (5, 15, 8, 18)
    assert s.position == ResumeToken(7, 8, 18)
    # Full mode keeps one event per frame (with its KVs).
    full = ClientSession("n1", features=FEATURES)
    full.connect()
    events(full, hello() + snapshot({"a": 1}))
    got = events(full, deltas)
    assert [e.frames for e in got] == [1] * 5 and [e.seq for e in got] == [4, 5, 6, 7, 8]


def _handshake(client_syncer: str, served: str | None = None) -> list[object]:
    """A ClientSession's hello through the real ServerProtocol; ``served`` overrides the
    syncer the server echoes."""
    s = ClientSession("n1", client_syncer, features=FEATURES)
    server = ServerProtocol()
    server.receive_data(s.connect())
    hello = server.next_event()
    if served is not None:
        hello = dataclasses.replace(hello, syncer=served)
    return events(s, server.accept(hello, server_version="t", epoch=1, conn_id=1, resumed=False))


def test_an_empty_syncer_is_felix_and_the_client_accepts_the_servers_echo() -> None:
    # The server reads an empty syncer as felix and echoes "felix"; the client must not take
    # that for a different syncer (it did, and hung up).
    (ev,) = _handshake("")
    assert isinstance(ev, Handshake) and ev.message.syncer == "felix"
    # Positive control: a syncer that really differs is refused.
    with pytest.raises(ProtocolError, match="server chose syncer 'bgp'"):
        _handshake("", served="bgp")
    with pytest.raises(ProtocolError, match="server chose syncer 'felix'"):
        _handshake("bgp", served="felix")
