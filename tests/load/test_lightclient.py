"""The load clients: frame cutting, counts, full-state digests, resume, and a bench smoke run.

Typha runs in-process (``tests.typha_harness.run_typha`` over a MemoryDatastore); the selector
engine runs in a worker thread, as it is blocking by design.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from load.lightclient import (
    FULL,
    LIGHT,
    ClientOptions,
    Engine,
    stamp_of,
    state_digest,
)
from tests.typha_harness import run_typha
from typha.model.keys import SyncerType, workload_endpoint_key
from typha.protocol import (
    BatchDone,
    KVKind,
    KVs,
    Ping,
    ServerHello,
    SyncStatus,
    SyncStatusMsg,
    encode_payload,
    frame,
    parse_kvs_header,
)
from typha.sync.memory import MemoryDatastore

ROOT = Path(__file__).resolve().parents[2]


def wep(i: int, version: int = 0, stamp: float | None = None) -> tuple[str, dict[str, Any]]:
    key = workload_endpoint_key(f"node{i % 5}", "k8s", f"ns/pod{i}", "eth0")
    value: dict[str, Any] = {"name": f"cali{i:011d}", "labels": {"v": str(version)}}
    if stamp is not None:
        value["stamp"] = stamp
    return key, value


async def typha_head(typha: Any, ds: MemoryDatastore) -> int:
    """The felix view's head once Typha has applied every write made so far."""
    view = typha.feed.views[SyncerType.FELIX]
    with trio.fail_after(10):
        while view.revision != ds.revision:
            await trio.sleep(0.01)
    return view.head_seq


async def run_engine_until(eng: Engine, pred: Any, timeout: float = 20.0) -> bool:
    return await trio.to_thread.run_sync(lambda: eng.run(duration=timeout, until=lambda: pred()))


# --- Parsing, without a socket ---------------------------------------------------------------


def _stream() -> tuple[bytes, dict[str, Any]]:
    now = time.time()
    kvs = [wep(i) for i in range(30)]
    parts = [
        frame(encode_payload(ServerHello("t", epoch=7, syncer="felix", conn_id=1))),
        frame(encode_payload(KVs(KVKind.SNAPSHOT, 3, 10, tuple(kvs[:20])))),
        frame(encode_payload(KVs(KVKind.SNAPSHOT, 3, 10, tuple(kvs[20:])))),
        frame(encode_payload(BatchDone(KVKind.SNAPSHOT, 3, 10, 30))),
        frame(encode_payload(SyncStatusMsg(SyncStatus.IN_SYNC))),
        frame(encode_payload(Ping(123))),
    ]
    deltas = 0
    for seq in range(4, 40):
        batch = tuple(wep(random.randrange(30), seq, stamp=now) for _ in range(seq % 7 + 1))
        deltas += len(batch)
        parts.append(frame(encode_payload(KVs(KVKind.DELTA, seq, 10 + seq, batch))))
    return b"".join(parts), {"deltas": deltas, "seq": 39, "revision": 49}


def test_light_parser_any_chunking() -> None:
    """Frames split anywhere (byte by byte included) give the same counts and position."""
    data, want = _stream()
    for chunking in (1, 2, 5, 7, 41, 4096, len(data)):
        eng = Engine(ClientOptions(["127.0.0.1:1"], mode=LIGHT, sample_prob=1.0), 1, seed=1)
        c = eng.clients[0]
        c.session.connect()
        for i in range(0, len(data), chunking):
            c.feed(data[i : i + chunking], time.time())
        assert c.kvs_snapshot == 30, chunking
        assert c.snapshots == 1 and c.in_sync and c.epoch == 7
        assert c.kvs_delta == want["deltas"], chunking
        assert (c.seq, c.revision) == (want["seq"], want["revision"])
        # sample_prob=1: every delta KV sampled, each with a stamp.
        assert len(eng.latencies) == want["deltas"] and eng.unstamped == 0
        assert all(0 <= x < 60_000 for x in eng.latencies)
        eng.close()


def test_kvs_header_and_stamps() -> None:
    payload = encode_payload(KVs(KVKind.DELTA, 2**40, None, (wep(1), wep(2))))
    assert parse_kvs_header(payload[:40]) == (0, 2**40, None, 2)
    assert stamp_of({"stamp": 1.5}) == 1.5
    assert stamp_of({"annotations": {"stamp": "2.25"}}) == 2.25
    assert stamp_of({"labels": {"load.typha/stamp": "3"}}) == 3.0
    assert stamp_of({"annotations": {}}) is None and stamp_of(None) is None


# --- Against a real Typha ----------------------------------------------------------------------


async def test_light_and_full_counts_and_digest() -> None:
    initial = dict(wep(i) for i in range(300))
    ds = MemoryDatastore(initial)
    async with run_typha(ds) as typha:
        opts_l = ClientOptions([typha.address], mode=LIGHT, sample_prob=0.5)
        opts_f = ClientOptions([typha.address], mode=FULL, sample_prob=0.5)
        opts_z = ClientOptions([typha.address], mode=LIGHT, sample_prob=0.5, compression=True)
        # A light engine with two full clients among its eight (how typha-load mixes them).
        light = Engine(opts_l, 8, node_prefix="light-", seed=1, full_clients=2)
        full = Engine(opts_f, 4, node_prefix="full-", seed=2)
        zstd = Engine(opts_z, 2, node_prefix="zstd-", seed=3)
        for eng in (light, full, zstd):
            eng.start()
            assert await run_engine_until(eng, lambda eng=eng: all(c.in_sync for c in eng.clients))
        # Churn: updates, deletions and re-creations, all stamped.
        rng = random.Random(3)
        writes = 0
        for step in range(200):
            i = rng.randrange(330)
            key, value = wep(i, step, stamp=time.time())
            if rng.random() < 0.2:
                ds.delete(key)
            else:
                ds.set(key, value)
            writes += 1
            if step % 20 == 0:
                await trio.sleep(0.01)
        head = await typha_head(typha, ds)
        for eng in (light, full, zstd):
            assert await run_engine_until(
                eng, lambda eng=eng: all(c.seq >= head for c in eng.clients)
            )
        want = state_digest(ds.data)
        assert all(c.digest() == want for c in full.clients)
        assert light.digests() == {"light-0": want, "light-1": want}
        assert all(not c.state for c in light.clients[2:])
        assert all(len(c.state) == len(ds.data) for c in full.clients)
        # Every client counted the same deltas, light or full; each write is at most one delta
        # (a delete of a missing key is not one).
        everyone = light.clients + full.clients + zstd.clients
        counts = {c.kvs_delta for c in everyone}
        assert len(counts) == 1 and 0 < counts.pop() <= writes
        assert all(c.kvs_snapshot == 300 for c in everyone)
        # The zstd clients really got compressed frames (the snapshot compresses well).
        assert sum(c.bytes for c in zstd.clients) < sum(c.bytes for c in light.clients[:2]) / 2
        assert light.latencies and full.latencies
        assert all(x >= 0 for x in light.latencies + full.latencies)
        for eng in (light, full, zstd):
            eng.close()


async def test_goodbye_reconnect_resumes_and_stays_exact() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(100)))
    async with run_typha(ds) as typha:
        full = Engine(ClientOptions([typha.address], mode=FULL, backoff_base=0.01), 3, seed=4)
        full.start()
        assert await run_engine_until(full, lambda: all(c.in_sync for c in full.clients))
        for conn in list(typha.server.connections.values()):
            conn.close("test goodbye", reconnect_delay=0.05)
        for i in range(20):
            ds.set(*wep(i, 1))
        ds.delete(wep(50)[0])
        assert await run_engine_until(
            full, lambda: all(c.resumes >= 1 and c.in_sync for c in full.clients)
        )
        head = await typha_head(typha, ds)
        assert await run_engine_until(full, lambda: all(c.seq >= head for c in full.clients))
        assert all(c.goodbyes == 1 and c.snapshots == 1 for c in full.clients)
        assert all(c.digest() == state_digest(ds.data) for c in full.clients)
        full.close()


# --- Bench smoke run ----------------------------------------------------------------------------


def test_bench_core_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "load.bench_core",
            "--quick",
            "--scenarios",
            "a,c,d",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "bench.png"),
            "--doc",
            "",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    a = res["a"]["rates"][0]
    assert a["connected"] == 20 and a["client_updates_per_s"] > 0
    assert a["typha_cpu_s"] > 0 and a["kvs_per_write"]
    c = res["c"]
    assert c["snapshots_generated"] == [1.0]
    assert all(r["all_in_sync"] for r in c["runs"])
    assert [n for n, _ in res["d"]["points"]] == [0, 10, 20]
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_the_sampling_probability_can_change_while_running() -> None:
    """A worker's "sample" command changes ``opts.sample_prob`` on a running engine."""
    data, want = _stream()
    eng = Engine(ClientOptions(["127.0.0.1:1"], mode=LIGHT, sample_prob=0.0), 1, seed=1)
    c = eng.clients[0]
    c.session.connect()
    half = len(data) // 2
    c.feed(data[:half], time.time())
    assert eng.latencies == [] and c.in_sync  # nothing sampled at probability 0
    eng.opts.sample_prob = 1.0
    c.feed(data[half:], time.time())
    assert eng.latencies and c.kvs_delta == want["deltas"]
    eng.close()
