"""Coverage-guided fuzzing with atheris (libFuzzer), for `make fuzz`.

    python -m tests.fuzz.atheris_main TARGET [libFuzzer flags, e.g. -runs=100000]

Targets (each asserts the same invariant as its hypothesis counterpart in this folder):

* ``server-stream``: bytes a client sends → the server's protocol: only ``ProtocolError``.
* ``client-stream``: bytes after a valid ServerHello → the client's protocol: only
  ``ProtocolError`` (zstd-compressed frames included).
* ``gob-server-stream``: bytes a Calico client sends → the gob server session (driven through
  its snapshot and restarts): only ``ProtocolError``, and input held stays within the bound.
* ``etcd-value``: one byte choosing a seed key, then a value's bytes → JSON → the etcd
  converter: only ``InvalidResource``; what converts is msgpack-able and parses on the node.
* ``model-value``: one byte choosing a model key, then JSON → the node client's calculation
  and rendering on top of the example state: never fails.
* ``selector``: text → the selector parser: only ``SelectorParseError``; a parsed selector
  evaluates, and its canonical form parses to the same meaning. Seeds include selectors
  thousands of levels deep (``-max_len`` follows the longest seed).
* ``deep-selector``: bytes drive the depth-aware generator (tests/fuzz/deepselectors.py): the
  first two bytes give the depth (up to 1,000 levels, four times the old parser's limit; the
  hypothesis tests go to 5,000), the rest seed its choices; the parsed
  selector must match like the generator's step-by-step reference.

hypothesis mutates structure; libFuzzer follows coverage through the decoders byte by byte, so
each finds what the other misses. The seed corpus is written to a temporary folder each run;
crashing inputs are written to ``.fuzz-artifacts/``.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["typha", "felix_client"]):
    from felix_client.calc import CalcEngine, render_files
    from felix_client.calc.model.updates import parse_update
    from felix_client.calc.selector import SelectorParseError, parse
    from typha.protocol import (
        ClientProtocol,
        ClientSession,
        ProtocolError,
        ServerProtocol,
        encode_payload,
        frame,
    )
    from typha.protocol.framing import compressed_frame
    from typha.protocol.gob import GobServerSession, SnapshotReady
    from typha.protocol.messages import (
        BatchDone,
        ClientHello,
        Goodbye,
        KVKind,
        KVs,
        Ping,
        ResumeToken,
        SyncStatus,
        SyncStatusMsg,
    )
    from typha.sync.convert.errors import InvalidResource
    from typha.sync.convert.etcd import convert_etcd_kv

from ..protocol.gob.golike import gob_client_streams
from .deepselectors import deep_selector, random_labels
from .seeds import base_model, etcd_seeds

FEATURES = ("catchup", "goodbye", "resume")
LABELS = {"a": "b", "app": "web", "x": ""}


def _split(data: bytes) -> tuple[bytes, bytes]:
    """First byte: where to cut the rest in two (exercises frames split across reads)."""
    if not data:
        return b"", b""
    cut = data[0] % (len(data))
    return data[1 : 1 + cut], data[1 + cut :]


def server_stream(data: bytes) -> None:
    proto = ServerProtocol()
    try:
        for chunk in _split(data):
            proto.receive_data(chunk)
            while (event := proto.next_event()) is not None:
                if isinstance(event, ClientHello):
                    proto.accept(event, server_version="f", epoch=1, conn_id=1, resumed=False)
    except ProtocolError:
        pass


def _server_hello() -> bytes:
    client = ClientProtocol()
    server = ServerProtocol()
    server.receive_data(
        client.start(node="n", syncer="felix", compressions=("zstd",), features=FEATURES)
    )
    hello = server.next_event()
    assert isinstance(hello, ClientHello)
    return server.accept(hello, server_version="f", epoch=1, conn_id=1, resumed=False)


SERVER_HELLO = _server_hello()


def client_stream(data: bytes) -> None:
    proto = ClientProtocol()
    proto.start(node="n", syncer="felix", compressions=("zstd",), features=FEATURES)
    proto.receive_data(SERVER_HELLO)
    assert proto.next_event() is not None
    try:
        for chunk in _split(data):
            proto.receive_data(chunk)
            while proto.next_event() is not None:
                pass
    except ProtocolError:
        pass
    # The session above it, in both modes (the header-only reader parses bytes itself).
    for header_only in (False, True):
        session = ClientSession(
            "n", features=FEATURES, header_only=header_only, sampler=lambda count: 1
        )
        session.connect()
        session.receive_data(SERVER_HELLO)
        try:
            for chunk in _split(data):
                session.receive_data(chunk)
                while session.next_event() is not None:
                    pass
        except ProtocolError:
            pass


def gob_server_stream(data: bytes) -> None:
    session = GobServerSession(server_version="f", conn_id=1)
    try:
        for chunk in _split(data):
            session.receive_data(chunk)
            while (event := session.next_event()) is not None:
                if isinstance(event, SnapshotReady):
                    session.send_snapshot([])
                    session.end_snapshot()
            assert session.buffered <= (1 << 20) + len(chunk)
    except ProtocolError:
        pass


ETCD = etcd_seeds()


def _choose(data: bytes, n: int) -> tuple[int, bytes]:
    return (data[0] % n, data[1:]) if data else (0, b"")


def etcd_value(data: bytes) -> None:
    index, raw = _choose(data, len(ETCD))
    key = ETCD[index][0]
    try:
        obj = json.loads(raw)
    except ValueError:
        return  # the datastore counts it as invalid before any converter runs
    if not isinstance(obj, dict):
        return
    try:
        updates = convert_etcd_kv(key, obj)
    except InvalidResource:
        return
    for update in updates:
        assert isinstance(update.key, str)
        frame(encode_payload(KVs(KVKind.DELTA, 1, 1, ((update.key, update.value),))))
        parse_update(update.key, update.value)


BASE = base_model()
BASE_KEYS = sorted(BASE)


def model_value(data: bytes) -> None:
    index, raw = _choose(data, len(BASE_KEYS))
    try:
        value = json.loads(raw)
    except ValueError:
        return
    engine = CalcEngine("node1")
    engine.apply_updates(BASE.items())
    engine.snapshot_done()
    engine.flush()
    engine.apply_updates([(BASE_KEYS[index], value)])
    engine.flush()
    render_files(engine.state())


def selector(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        parsed = parse(text)
    except SelectorParseError:
        return
    matched = parsed.matches(LABELS)
    assert isinstance(matched, bool)
    assert parse(parsed.canonical).matches(LABELS) == matched


def deep_selector_target(data: bytes) -> None:
    depth = int.from_bytes(data[:2], "big") % 1001 if len(data) >= 2 else 0
    rng = random.Random(data[2:])
    generated = deep_selector(rng, depth)
    parsed = parse(generated.text)
    for _ in range(4):
        labels = random_labels(rng)
        assert parsed.matches(labels) == generated.expected(labels)


def _server_frames() -> list[bytes]:
    kvs = KVs(KVKind.SNAPSHOT, 1, 7, (("/calico/v1/config/A", "1"), ("/calico/v1/x", None)))
    messages = [
        kvs,
        BatchDone(KVKind.SNAPSHOT, 1, 7, 2),
        SyncStatusMsg(SyncStatus.IN_SYNC),
        KVs(KVKind.CATCHUP, 2, 8, (("/calico/v1/config/B", {"a": [1, 2.5, None]}),)),
        Ping(123),
        Goodbye("bye", 1.5, "127.0.0.1:5473"),
    ]
    frames = [frame(encode_payload(m)) for m in messages]
    frames.append(compressed_frame(encode_payload(kvs)))
    return [b"\x00" + f for f in frames] + [b"\x00" + b"".join(frames)]


def _seeds(target: str) -> list[bytes]:
    if target == "server-stream":
        hello = ClientHello("n", "felix", "v", "", ("zstd",), FEATURES, ResumeToken(1, 2, 3), 9)
        return [b"\x00" + frame(encode_payload(hello)), b"\x05" + frame(encode_payload(hello))]
    if target == "client-stream":
        return _server_frames()
    if target == "gob-server-stream":
        return [bytes([i * 37]) + s for i, s in enumerate(gob_client_streams())]
    if target == "etcd-value":
        return [bytes([i]) + value for i, (_key, value) in enumerate(ETCD)]
    if target == "model-value":
        return [bytes([i]) + json.dumps(BASE[k]).encode() for i, k in enumerate(BASE_KEYS)]
    if target == "deep-selector":
        return [(0).to_bytes(2, "big"), (400).to_bytes(2, "big") + b"x", (1000).to_bytes(2, "big")]
    shallow = ("all()", "a == 'b' && has(x)", "app in {'web', 'db'}")
    deep = [deep_selector(random.Random(i), d).text for i, d in enumerate((400, 2000))]
    return [s.encode() for s in (*shallow, "(" * 5000 + "a == 'b'" + ")" * 5000, *deep)]


TARGETS: dict[str, Callable[[bytes], None]] = {
    "server-stream": server_stream,
    "client-stream": client_stream,
    "gob-server-stream": gob_server_stream,
    "etcd-value": etcd_value,
    "model-value": model_value,
    "selector": selector,
    "deep-selector": deep_selector_target,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_main {{{','.join(TARGETS)}}} [flags]")
    target = sys.argv[1]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    for i, seed in enumerate(_seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts = Path(".fuzz-artifacts")
    artifacts.mkdir(exist_ok=True)
    argv = [sys.argv[0], *sys.argv[2:], f"-artifact_prefix={artifacts}/{target}-"]
    if not any(not arg.startswith("-") for arg in sys.argv[2:]):
        argv.append(str(corpus))  # no inputs given to replay: fuzz from the seeds
    atheris.Setup(argv, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
