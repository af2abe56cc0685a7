"""Our server-side gob encoding, decoded by Calico's own Go code (the gobcheck oracle).

Streams mix plain and snappy segments, decoder restarts, and shared parts encoded once and
written in varied orders; Go must read exactly the messages we meant.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from typha.protocol.gob import (
    ENCODE_COUNTS,
    PREAMBLE,
    SNAPPY_PREAMBLE,
    DecoderRestart,
    EncodedPart,
    GoTime,
    SerializedUpdate,
    ServerHello,
    kvs_part,
    ping_part,
    status_part,
)
from typha.protocol.gob.encoder import (
    encode_decoder_restart,
    encode_ping,
    encode_server_hello,
    message_part,
)

from .oracle import ORACLE, Oracle
from .streams import (
    expect_kvs,
    expect_ping,
    expect_restart,
    expect_server_hello,
    expect_status,
    go_times,
    streaming_session,
    updates,
)

# One item of a segment: (part, what Go should print for it).
Item = tuple[EncodedPart, list[dict[str, Any]]]


@st.composite
def items(draw: st.DrawFn) -> Item:
    kind = draw(st.sampled_from(["kvs", "status", "ping", "hello"]))
    if kind == "kvs":
        kvs = draw(st.lists(updates, max_size=7))
        per = draw(st.integers(1, 4))
        part = kvs_part(kvs, per)
        chunks = [kvs[i : i + per] for i in range(0, len(kvs), per)]
        return part, [expect_kvs(c) for c in chunks]
    if kind == "status":
        status = draw(st.integers(0, 2))
        return status_part(status), [expect_status(status)]
    if kind == "ping":
        t = draw(go_times)
        return message_part(encode_ping(t)), [expect_ping(t)]
    hello = ServerHello(
        draw(st.text(max_size=10)), draw(st.sampled_from(["felix", "bgp", ""])), True, 3
    )
    return message_part(encode_server_hello(hello)), [expect_server_hello(hello)]


@ORACLE
@given(
    st.lists(
        st.tuples(st.booleans(), st.lists(items(), max_size=5), st.text(max_size=20)),
        min_size=1,
        max_size=4,
    )
)
def test_go_decodes_segments_with_restarts_and_snappy(
    oracle: Oracle, segments: list[tuple[bool, list[Item], str]]
) -> None:
    """Each segment: preamble (plain or snappy), shared parts, and (but the last) a restart
    naming the next segment's compression; Calico's client switches decoders on it."""
    wire: list[bytes] = []
    expected: list[dict[str, Any]] = []
    if segments[0][0]:  # a stream always starts plain
        segments.insert(0, (False, [], "go snappy"))
    for i, (snappy, parts, reason) in enumerate(segments):
        out = [SNAPPY_PREAMBLE if snappy else PREAMBLE]
        for part, msgs in parts:
            out.append(part.snappy if snappy else part.plain)
            expected.extend(msgs)
        if i + 1 < len(segments):
            comp = "snappy" if segments[i + 1][0] else ""
            last = message_part(encode_decoder_restart(DecoderRestart(reason, comp)))
            expected.append(expect_restart(reason, comp))
        else:
            # Go reports a stream that stops right after type definitions as truncated
            # (a live connection would just wait): end the last segment with a value.
            last = status_part(2)
            expected.append(expect_status(2))
        out.append(last.snappy if snappy else last.plain)
        wire.append(b"".join(out))
    answer = oracle.decode_server(wire)
    assert answer["ok"], answer.get("error")
    assert answer.get("messages", []) == expected


@ORACLE
@given(st.lists(items(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_shared_parts_in_any_order_decode_on_every_stream(oracle: Oracle, parts, rnd) -> None:
    """Parts encoded once, written to three 'connections' in different orders and subsets."""
    for _ in range(3):
        chosen = [p for p in parts if rnd.random() < 0.7]
        rnd.shuffle(chosen)
        snappy = rnd.random() < 0.5
        chosen.append((status_part(1), [expect_status(1)]))  # see the test above
        body = b"".join(p.snappy if snappy else p.plain for p, _ in chosen)
        expected = [m for _, msgs in chosen for m in msgs]
        if snappy:
            wire = [
                PREAMBLE + encode_decoder_restart(DecoderRestart("z", "snappy")),
                SNAPPY_PREAMBLE + body,
            ]
            expected.insert(0, expect_restart("z", "snappy"))
        else:
            wire = [PREAMBLE + body]
        answer = oracle.decode_server(wire)
        assert answer["ok"], answer.get("error")
        assert answer.get("messages", []) == expected


def test_kvs_are_chunked_per_message(oracle: Oracle) -> None:
    kvs = [SerializedUpdate(f"/k/{i}", b"v", str(i)) for i in range(250)]
    answer = oracle.decode_server([PREAMBLE + kvs_part(kvs, 100).plain])
    assert answer["ok"], answer.get("error")
    assert [len(m["KVs"]) for m in answer["messages"]] == [100, 100, 50]
    answer = oracle.decode_server([PREAMBLE + kvs_part(kvs, 1000).plain])
    assert [len(m["KVs"]) for m in answer["messages"]] == [250]


def test_a_value_without_the_preamble_is_refused_by_go(oracle: Oracle) -> None:
    """Negative control for the oracle: the preamble really is what defines the types."""
    part = status_part(2)
    answer = oracle.decode_server([part.plain])
    assert not answer["ok"]
    assert oracle.decode_server([PREAMBLE + part.plain])["ok"]  # positive control


def test_the_oracle_notices_a_wrong_value(oracle: Oracle) -> None:
    """Negative control: a corrupted KV changes what Go decodes (the comparison can fail)."""
    part = kvs_part([SerializedUpdate("/k", b"value-one", "1")])
    wrong = part.plain.replace(b"value-one", b"value-two")
    answer = oracle.decode_server([PREAMBLE + wrong])
    assert answer["ok"]
    assert answer["messages"] != [expect_kvs([SerializedUpdate("/k", b"value-one", "1")])]


def test_encodes_are_counted_once_per_batch_not_per_connection() -> None:
    sessions = [streaming_session(snappy=i % 2 == 0, conn_id=i) for i in range(5)]
    before = (ENCODE_COUNTS.kv_batches, ENCODE_COUNTS.snappy_compressions)
    breadcrumbs = [kvs_part([SerializedUpdate(f"/k/{n}", b"v", str(n))]) for n in range(10)]
    written: list[list[bytes]] = []
    for s in sessions:
        for b in breadcrumbs:
            s.send(b)
        written.append(s.data_to_send())
    after = (ENCODE_COUNTS.kv_batches, ENCODE_COUNTS.snappy_compressions)
    assert after[0] - before[0] == len(breadcrumbs)  # not breadcrumbs x sessions
    assert after[1] - before[1] == len(breadcrumbs)  # compressed once for 3 snappy sessions
    # The very same bytes objects went to every connection of a kind.
    for i, out in enumerate(written):
        want = [b.snappy if i % 2 == 0 else b.plain for b in breadcrumbs]
        assert len(out) == len(want)
        assert all(a is b for a, b in zip(out, want, strict=True))
    # Positive control: encoding again is counted.
    kvs_part([SerializedUpdate("/k/x", b"v")])
    assert ENCODE_COUNTS.kv_batches == after[0] + 1
    # A ping part made once per tick is shared the same way.
    ping = ping_part(GoTime(1_700_000_000_000_000_000))
    for i, s in enumerate(sessions):
        s.send_ping(ping)
        assert s.data_to_send() == [ping.snappy if i % 2 == 0 else ping.plain]
        s.send_ping(ping)
        assert s.data_to_send()[0] is (ping.snappy if i % 2 == 0 else ping.plain)


def test_large_parts_span_many_snappy_chunks_and_go_reads_them(oracle: Oracle) -> None:
    """A 1,000-KV snapshot chunk (~400 KB): compressed and stored 64 KiB chunks alike."""
    rng = random.Random(7)
    kvs = [
        SerializedUpdate(
            f"/calico/v1/host/n/workload/k8s/p-{i}/endpoint/eth0",
            rng.randbytes(300) if i % 2 else b'{"state":"active"}' * 20,
            str(i),
            "",
            0,
            1,
        )
        for i in range(1000)
    ]
    part = kvs_part(kvs, 1000)
    assert len(part.plain) > 6 * 65536
    wire = [
        PREAMBLE + encode_decoder_restart(DecoderRestart("z", "snappy")),
        SNAPPY_PREAMBLE + part.snappy + status_part(2).snappy,
    ]
    answer = oracle.decode_server(wire)
    assert answer["ok"], answer.get("error")
    assert answer["messages"][1:] == [expect_kvs(kvs), expect_status(2)]


def test_first_byte_rule_holds_for_both_encoders(oracle: Oracle) -> None:
    """What Go's client and our msgpack client actually write first."""
    from typha.protocol import ClientProtocol
    from typha.protocol.gob import sniff

    go_stream, _ = oracle.encode_client([{"type": "MsgClientHello", "Hostname": "h" * 300}])
    assert sniff(go_stream) == "gob"
    ours = ClientProtocol().start(node="n" * 300, syncer="felix", compressions=("zstd",))
    assert sniff(ours) == "msgpack"
    assert sniff(PREAMBLE) == "gob"
