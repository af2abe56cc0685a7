"""Property tests for the wire protocol: round trips, arbitrary splits, garbage."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typha.protocol import (
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    BatchDone,
    ClientHello,
    ClientProtocol,
    FrameDecoder,
    Goodbye,
    KVKind,
    KVs,
    Ping,
    Pong,
    ProtocolError,
    ResumeToken,
    ServerHello,
    ServerProtocol,
    SyncStatus,
    SyncStatusMsg,
    best_frame,
    compressed_frame,
    decode_payload,
    encode_payload,
    frame,
)

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
seqs = st.integers(min_value=-1, max_value=2**62)
text = st.text(max_size=40)
scalar = (
    st.none() | st.booleans() | ints | st.floats(allow_nan=False) | text | st.binary(max_size=20)
)
values = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
tokens = st.none() | st.builds(ResumeToken, ints, seqs, st.none() | ints)

messages = st.one_of(
    st.builds(
        ClientHello,
        node=text,
        syncer=st.sampled_from(["felix", "bgp", "tunnel-ip-allocation", "node-status", "x"]),
        client_version=text,
        info=text,
        compressions=st.lists(text, max_size=3).map(tuple),
        features=st.lists(text, max_size=3).map(tuple),
        resume=tokens,
        conn_id=ints,
        protocol=st.integers(min_value=0, max_value=5),
    ),
    st.builds(
        ServerHello,
        server_version=text,
        epoch=ints,
        syncer=text,
        compression=st.none() | text,
        features=st.lists(text, max_size=3).map(tuple),
        conn_id=ints,
        resumed=st.booleans(),
        resume_seq=st.none() | seqs,
        protocol=st.integers(min_value=0, max_value=5),
    ),
    st.builds(SyncStatusMsg, st.sampled_from(list(SyncStatus))),
    st.builds(
        KVs,
        st.sampled_from(list(KVKind)),
        seqs,
        st.none() | ints,
        st.lists(st.tuples(text, values), max_size=6).map(tuple),
    ),
    st.builds(
        BatchDone,
        st.sampled_from([KVKind.SNAPSHOT, KVKind.CATCHUP]),
        seqs,
        st.none() | ints,
        st.integers(min_value=0, max_value=2**40),
    ),
    st.builds(Ping, ints),
    st.builds(Pong, ints, seqs),
    st.builds(
        Goodbye,
        text,
        st.none() | st.floats(min_value=0, max_value=3600),
        st.none() | text,
    ),
)

SETTINGS = settings(
    max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow], deadline=None
)


@SETTINGS
@given(messages)
def test_every_message_round_trips(msg) -> None:
    assert decode_payload(encode_payload(msg)) == msg


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=5), st.booleans())
def test_stream_split_at_every_boundary_decodes_the_same(msgs, compress) -> None:
    make = compressed_frame if compress else frame
    stream = b"".join(make(encode_payload(m)) for m in msgs)
    for cut in range(len(stream) + 1):
        dec = FrameDecoder(1 << 20)
        out = []
        for part in (stream[:cut], stream[cut:]):
            dec.feed(part)
            while (p := dec.next_payload()) is not None:
                out.append(decode_payload(p))
        assert out == msgs


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4))
def test_byte_at_a_time(msgs) -> None:
    stream = b"".join(best_frame(encode_payload(m), min_size=16) for m in msgs)
    dec = FrameDecoder(1 << 20)
    out = []
    for b in stream:
        dec.feed(bytes([b]))
        while (p := dec.next_payload()) is not None:
            out.append(decode_payload(p))
    assert out == msgs
    assert dec.buffered == 0


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_payload_in_valid_frame_only_raises_protocol_error(data) -> None:
    for proto in (ServerProtocol(), ClientProtocol()):
        if isinstance(proto, ClientProtocol):
            proto.start(node="n", syncer="felix")
        proto.receive_data(frame(data))
        try:
            proto.next_event()
        except ProtocolError:
            assert proto.state.value == "closed"


@SETTINGS
@given(messages)
def test_server_accepts_only_hello_first(msg) -> None:
    proto = ServerProtocol()
    proto.receive_data(frame(encode_payload(msg)))
    if isinstance(msg, ClientHello):
        assert proto.next_event() == msg
    else:
        try:
            proto.next_event()
        except ProtocolError:
            return
        raise AssertionError("a non-hello first message was accepted")


def test_negotiation_only_grants_advertised_features() -> None:
    client = ClientProtocol()
    hello_bytes = client.start(node="n1", syncer="felix", features=(FEATURE_GOODBYE,))
    server = ServerProtocol()
    server.receive_data(hello_bytes)
    hello = server.next_event()
    assert isinstance(hello, ClientHello)
    reply = server.accept(hello, server_version="t", epoch=7, conn_id=1, resumed=False)
    client.receive_data(reply)
    sh = client.next_event()
    assert isinstance(sh, ServerHello)
    assert sh.features == (FEATURE_GOODBYE,)
    assert sh.compression == "zstd"
    # Goodbye was advertised: allowed. Catch-up was not: refused on the server side.
    client.receive_data(server.send(Goodbye("bye", 1.5, "127.0.0.1:5473")))
    assert client.next_event() == Goodbye("bye", 1.5, "127.0.0.1:5473")
    try:
        server.send(KVs(KVKind.CATCHUP, 1, None, ()))
    except ProtocolError:
        pass
    else:
        raise AssertionError("sent catch-up to a client that did not advertise it")
    assert FEATURE_CATCHUP not in server.supports


def test_compression_is_safe_from_several_threads_at_once() -> None:
    """Snapshots compress in worker threads while the event loop compresses deltas."""
    import threading

    payloads = [
        encode_payload(
            KVs(
                KVKind.SNAPSHOT,
                i,
                i,
                tuple((f"/k/{i}/{j}", {"v": "x" * (j % 50)}) for j in range(400)),
            )
        )
        for i in range(8)
    ]
    errors: list[BaseException] = []

    def work(p: bytes) -> None:
        try:
            for _ in range(30):
                dec = FrameDecoder(1 << 24)
                dec.feed(compressed_frame(p))
                assert dec.next_payload() == p
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
