"""etcd's JSON gateway vs its gRPC API, for Typha's list and watch (issue 14, item 3).

    python -m load.bench_etcd_watch --runs 3 --duration 20 [--doc]

One real etcd on loopback (tmpfs) holds ``--keys`` WorkloadEndpoints (~1 KB JSON values, the
layout ``typha.sync.etcd_writer`` writes). Per run, a watcher *process* for one variant:

* ``gateway``: what Typha does today: ``typha.sync.etcd_client.EtcdClient`` (httpx on trio,
  pages of 1,000 for the list, the NDJSON watch stream decoded with orjson, keys and values
  base64-decoded into ``KeyValue``);
* ``grpc``: grpcio's synchronous stubs in a worker thread bridged to trio: the list as
  ``KV.Range`` pages of 1,000 through ``trio.to_thread``, the watch as one bidirectional
  ``Watch`` stream iterated in a thread that decodes each response into the same
  ``WatchResponse``/``KeyValue`` objects and hands it to trio with ``TrioToken.run_sync_soon``
  (fire-and-forget, no round trip per message). Stubs: ``load.etcd_grpc_stubs`` (generated
  from etcd's own .proto files).

The watcher lists every key (time and its own CPU), then watches from the list's revision + 1,
as Typha's etcd syncer does. Meanwhile this process writes ``--rate`` puts per second of
existing keys in etcd transactions every ``--txn-ms`` (5 ms: 5 puts per txn at 1,000/s), each
value stamped with its write time; the watcher turns stamps into write → receive latency.
Measured over the write window: the watcher's CPU seconds (whole process: grpcio's own threads
count) per 100,000 events, etcd's CPU seconds, latency p50/p99/max, events received vs
written. Variants alternate (the order flips every round); the 1-minute load average is
recorded with every run. Results: .load-results/bench_etcd_watch.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import trio

from load.harness import RESULTS, latency_summary, write_result
from load.local_etcd import LocalEtcd, find_etcd
from typha.sync.etcd_client import (
    EtcdClient,
    KeyValue,
    PutOp,
    WatchEvent,
    WatchResponse,
    prefix_range_end,
)

PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
PAGE = 1000
VARIANTS = ("gateway", "grpc", "h2")
STAMP_MARK = b'"stamp":"'
# Same length as f"{time.time():.6f}" until 2286, so a template is stamped by replace().
STAMP_SLOT = b"0000000000.000000"


# --- the data -----------------------------------------------------------------------------------


def endpoint_resource(i: int) -> dict[str, Any]:
    """A WorkloadEndpoint with the labels a real Deployment pod carries (~1 KB as etcd JSON)."""
    from typha.resources import workload_endpoint_for_pod

    app = f"app-{i % 97}"
    res = workload_endpoint_for_pod(
        f"node-{i % 200:04d}",
        f"ns-{i % 50}",
        f"{app}-{(i * 2654435761) & 0xFFFFFFFF:08x}-{i:05d}",
        f"10.{64 + (i >> 16) % 64}.{(i >> 8) & 255}.{i & 255}",
        {
            "app": app,
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": f"{app}-prod",
            "app.kubernetes.io/version": f"1.{i % 13}.{i % 7}",
            "app.kubernetes.io/component": ("frontend", "backend", "worker", "cache")[i % 4],
            "app.kubernetes.io/part-of": f"shop-{i % 11}",
            "app.kubernetes.io/managed-by": "helm",
            "pod-template-hash": f"{(i * 2654435761) & 0xFFFFFFFF:08x}",
            "team": f"team-{i % 23}",
            "tier": ("web", "api", "data")[i % 3],
            "environment": "production",
        },
    )
    res["metadata"]["annotations"] = {"stamp": STAMP_SLOT.decode()}
    return res


def templates(keys: int) -> list[tuple[str, bytes]]:
    from typha.sync.etcd_writer import encode_resource

    out = []
    for i in range(keys):
        key, value = encode_resource(endpoint_resource(i))
        assert STAMP_MARK + STAMP_SLOT in value
        out.append((key, value))
    return out


def stamp_of(value: bytes) -> float | None:
    """The write time stamped in ``value`` (the watcher's only look inside a value)."""
    at = value.find(STAMP_MARK)
    if at < 0:
        return None
    at += len(STAMP_MARK)
    return float(value[at : value.index(b'"', at)])


# --- the watcher process ------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events = 0
        self.responses = 0
        self.latencies_ms: list[float] = []

    def record(self, resp: WatchResponse) -> None:
        now = time.time()
        self.responses += 1
        for ev in resp.events:
            self.events += 1
            stamp = stamp_of(ev.kv.value)
            if stamp is not None and stamp > 1.0:
                self.latencies_ms.append((now - stamp) * 1000.0)


# Each variant: ``list()`` → (key-values, revision) and ``watch(start)``, an async context
# manager that returns once etcd confirmed the watch and yields an async iterator of
# ``WatchResponse`` (events decoded to key/value bytes, exactly as Typha's client does).


class GatewayVariant:
    """Typha today: ``EtcdClient`` (httpx on trio, orjson, base64)."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[GatewayVariant]:
        async with EtcdClient([url]) as client:
            yield cls(client)

    async def list(self) -> tuple[list[KeyValue], int]:
        kvs: list[KeyValue] = []
        revision = 0
        async for page in self.client.range_paginated(PREFIX, page_size=PAGE):
            kvs.extend(page.kvs)
            revision = page.revision
        return kvs, revision

    @contextlib.asynccontextmanager
    async def watch(self, start: int) -> AsyncIterator[AsyncIterator[WatchResponse]]:
        async with self.client.watch(
            PREFIX, prefix_range_end(PREFIX), start_revision=start, progress_notify=True
        ) as stream:
            yield stream


def _kv(kv: Any) -> KeyValue:
    # The same KeyValue the gateway path builds (key decoded, value as bytes).
    return KeyValue(
        kv.key.decode("utf-8", "surrogateescape"),
        kv.value,
        kv.mod_revision,
        kv.create_revision,
        kv.version,
    )


def _events(resp: Any, delete: int) -> list[WatchEvent]:
    return [WatchEvent("DELETE" if ev.type == delete else "PUT", _kv(ev.kv)) for ev in resp.events]


class GrpcThreadVariant:
    """grpcio's synchronous stubs; the list through ``trio.to_thread``, each watch iterated
    in a thread of its own that hands decoded responses to trio with ``run_sync_soon``."""

    def __init__(self, channel: Any) -> None:
        import grpc

        from load.etcd_grpc_stubs import load_stubs

        self.grpc = grpc
        self.rpc_pb2, rpc_pb2_grpc, kv_pb2 = load_stubs()
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch_stub = rpc_pb2_grpc.WatchStub(channel)
        self.delete = kv_pb2.Event.DELETE

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[GrpcThreadVariant]:
        import grpc

        target = url.split("://", 1)[-1]
        channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])
        try:
            yield cls(channel)
        finally:
            channel.close()

    async def list(self) -> tuple[list[KeyValue], int]:
        end = prefix_range_end(PREFIX)

        def page(key: bytes, revision: int) -> tuple[list[KeyValue], int, bool]:
            req = self.rpc_pb2.RangeRequest(key=key, range_end=end, limit=PAGE, revision=revision)
            resp = self.kv.Range(req, timeout=30)
            return [_kv(kv) for kv in resp.kvs], resp.header.revision, resp.more

        kvs: list[KeyValue] = []
        key, pinned = PREFIX.encode(), 0
        while True:
            got, rev, more = await trio.to_thread.run_sync(page, key, pinned)
            pinned = pinned or rev
            kvs.extend(got)
            if not more or not got:
                return kvs, pinned
            key = got[-1].key.encode("utf-8", "surrogateescape") + b"\0"

    @contextlib.asynccontextmanager
    async def watch(self, start: int) -> AsyncIterator[AsyncIterator[WatchResponse]]:
        grpc, rpc_pb2, delete = self.grpc, self.rpc_pb2, self.delete
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[WatchResponse | BaseException](math.inf)
        created = trio.Event()
        done_sending = threading.Event()
        create = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=PREFIX.encode(),
                range_end=prefix_range_end(PREFIX),
                start_revision=start,
                progress_notify=True,
            )
        )

        def requests() -> Any:
            yield create
            done_sending.wait()  # keep our half of the stream open until we stop

        call = self.watch_stub.Watch(requests())

        def pump() -> None:
            try:
                for resp in call:
                    if resp.created:
                        token.run_sync_soon(created.set)
                    elif resp.canceled:
                        raise RuntimeError(f"watch cancelled: {resp.cancel_reason}")
                    else:
                        item = WatchResponse(resp.header.revision, _events(resp, delete))
                        token.run_sync_soon(send.send_nowait, item)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    token.run_sync_soon(send.send_nowait, exc)
            except BaseException as exc:  # handed to trio, raised there
                token.run_sync_soon(send.send_nowait, exc)

        async def responses() -> AsyncIterator[WatchResponse]:
            async for item in receive:
                if isinstance(item, BaseException):
                    raise item
                yield item

        thread = threading.Thread(target=pump, name="etcd-grpc-watch", daemon=True)
        thread.start()
        try:
            with trio.fail_after(30):
                await created.wait()
            yield responses()
        finally:
            call.cancel()
            done_sending.set()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join, 5)


class H2Variant(GatewayVariant):
    """gRPC on trio itself: the product's opt-in client (``EtcdAPI=grpc``,
    ``typha.sync.etcd_grpc.GrpcEtcdClient``: h2 + protobuf, no thread), through the same calls
    as the gateway variant."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[H2Variant]:  # type: ignore[override]
        from typha.sync.etcd_grpc import GrpcEtcdClient

        async with GrpcEtcdClient([url]) as client:
            yield cls(client)  # type: ignore[arg-type]


VARIANT_CLASSES: dict[str, Any] = {
    "gateway": GatewayVariant,
    "grpc": GrpcThreadVariant,
    "h2": H2Variant,
}


def report(out: Any, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


async def child(variant: str, url: str) -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    rec = Recorder()
    stop = trio.Event()

    async def wait_stop() -> None:
        # The parent writes "stop" (or closes stdin) when the write window and drain are over.
        await trio.to_thread.run_sync(sys.stdin.readline)
        stop.set()

    async with trio.open_nursery() as outer, VARIANT_CLASSES[variant].open(url) as v:
        outer.start_soon(wait_stop)
        t0, c0 = time.monotonic(), time.process_time()
        kvs, revision = await v.list()
        report(
            out, listed=len(kvs), list_s=time.monotonic() - t0, list_cpu_s=time.process_time() - c0
        )
        del kvs
        async with v.watch(revision + 1) as responses:
            report(out, watching=True)
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    async for resp in responses:
                        rec.record(resp)

                nursery.start_soon(consume)
                await stop.wait()
                nursery.cancel_scope.cancel()
        # Replay: the same events again from history (a restarted Typha catching up): one
        # watch from the list's revision until it has delivered as many events as the run.
        t0, c0 = time.monotonic(), time.process_time()
        replayed = 0
        async with v.watch(revision + 1) as responses:
            async for resp in responses:
                replayed += len(resp.events)
                if replayed >= rec.events:
                    break
        replay = {
            "events": replayed,
            "secs": time.monotonic() - t0,
            "cpu_s": time.process_time() - c0,
        }
    report(
        out,
        events=rec.events,
        responses=rec.responses,
        latency_ms=latency_summary(rec.latencies_ms),
        replay=replay,
    )


# --- the parent: etcd, the writer, the runs -----------------------------------------------------


async def preload(url: str, data: list[tuple[str, bytes]]) -> None:
    from typha.sync.etcd_writer import write_ops

    async with EtcdClient([url]) as client:
        await write_ops(client, [PutOp(k, v) for k, v in data])


def writer(
    url: str, data: list[tuple[str, bytes]], rate: float, txn_s: float, secs: float
) -> dict[str, Any]:
    """Open-loop writer: every ``txn_s`` the puts that fell due since the last txn, in one txn
    (at most 128, etcd's default cap), each value stamped with the time it is sent.

    Written over gRPC (synchronous grpcio, run in a thread) rather than the gateway: the writer
    is the same for every variant, and gRPC costs this shared machine and etcd the least CPU,
    which keeps the 5 ms cadence and leaves etcd's CPU to the watch being measured."""
    import grpc

    from load.etcd_grpc_stubs import load_stubs

    rpc_pb2, rpc_pb2_grpc, _ = load_stubs()
    written = txns = errors = 0
    i = 0
    with grpc.insecure_channel(url.split("://", 1)[-1]) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        t0 = time.monotonic()
        deadline = t0 + secs
        tick = t0
        while (now := time.monotonic()) < deadline:
            due = min(int((now - t0) * rate) - written, 128)
            if due > 0:
                stamp = f"{time.time():.6f}".encode()
                ops = []
                for _ in range(due):
                    key, template = data[i % len(data)]
                    i += 1
                    put = rpc_pb2.PutRequest(
                        key=key.encode(), value=template.replace(STAMP_SLOT, stamp, 1)
                    )
                    ops.append(rpc_pb2.RequestOp(request_put=put))
                try:
                    kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=10)
                    written += due
                    txns += 1
                except grpc.RpcError:  # count and go on, the run is judged by events received
                    errors += 1
            tick += txn_s
            time.sleep(max(0.0, tick - time.monotonic()))
        elapsed = time.monotonic() - t0
    return {
        "written": written,
        "txns": txns,
        "errors": errors,
        "rate": round(written / elapsed, 1),
        "puts_per_txn": round(written / txns, 2) if txns else None,
    }


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


async def read_json(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    assert proc.stdout is not None
    with trio.fail_after(timeout):
        line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    if not line:
        raise RuntimeError(f"watcher exited early (rc {proc.wait()})")
    return json.loads(line)  # type: ignore[no-any-return]


async def one_run(
    variant: str, etcd: LocalEtcd, data: list[tuple[str, bytes]], args: argparse.Namespace
) -> dict[str, Any]:
    assert etcd.proc is not None
    epid = etcd.proc.pid
    load1 = os.getloadavg()[0]
    e0 = cpu(epid)
    proc = subprocess.Popen(
        [sys.executable, "-m", "load.bench_etcd_watch", "--child", variant, "--etcd", etcd.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        listed = await read_json(proc)
        e1 = cpu(epid)
        await read_json(proc)  # watching
        c0, e2 = cpu(proc.pid), cpu(epid)
        wrote = await trio.to_thread.run_sync(
            writer, etcd.url, data, args.rate, args.txn_ms / 1000, args.duration
        )
        await trio.sleep(args.drain)
        c1, e3 = cpu(proc.pid), cpu(epid)
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        summary = await read_json(proc)
        e4 = cpu(epid)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = summary["events"]
    watcher_cpu = c1 - c0
    return {
        "variant": variant,
        "load1_at_start": round(load1, 2),
        "load1_at_end": round(os.getloadavg()[0], 2),
        "writer": wrote,
        "events": events,
        "responses": summary["responses"],
        "delivered_fraction": round(events / wrote["written"], 4) if wrote["written"] else None,
        "watcher_cpu_s": round(watcher_cpu, 3),
        "watcher_cpu_s_per_100k_events": round(watcher_cpu / events * 1e5, 3) if events else None,
        "etcd_cpu_s": round(e3 - e2, 3),
        "latency_ms": summary["latency_ms"],
        "list_keys": listed["listed"],
        "list_s": round(listed["list_s"], 3),
        "list_watcher_cpu_s": round(listed["list_cpu_s"], 3),
        "list_etcd_cpu_s": round(e1 - e0, 3),
        "replay_events": summary["replay"]["events"],
        "replay_s": round(summary["replay"]["secs"], 3),
        "replay_watcher_cpu_s": round(summary["replay"]["cpu_s"], 3),
        "replay_etcd_cpu_s": round(e4 - e3, 3),
    }


SUMMARY_FIELDS = (
    ("watcher_cpu_s_per_100k_events", "watcher CPU-s / 100k events"),
    ("etcd_cpu_s", "etcd CPU-s over the run"),
    ("p50", "write → watcher p50 (ms)"),
    ("p99", "write → watcher p99 (ms)"),
    ("max", "write → watcher max (ms)"),
    ("list_s", "list of all keys: wall (s)"),
    ("list_watcher_cpu_s", "list of all keys: watcher CPU-s"),
    ("list_etcd_cpu_s", "list of all keys: etcd CPU-s"),
    ("replay_s", "replay of the run's events: wall (s)"),
    ("replay_watcher_cpu_s", "replay: watcher CPU-s"),
    ("replay_etcd_cpu_s", "replay: etcd CPU-s"),
)


def field(run: dict[str, Any], name: str) -> float:
    if name in ("p50", "p99", "max"):
        return float(run["latency_ms"][name])
    return float(run[name])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        out[variant] = {
            name: {
                "median": round(statistics.median(field(r, name) for r in mine), 3),
                "min": round(min(field(r, name) for r in mine), 3),
                "max": round(max(field(r, name) for r in mine), 3),
            }
            for name, _ in SUMMARY_FIELDS
        }
    return out


LABELS = {
    "gateway": "JSON gateway (today)",
    "grpc": "gRPC: grpcio in a thread",
    "h2": "gRPC: h2 on trio",
}


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    variants = [v for v in VARIANTS if v in s]
    others = [v for v in variants if v != "gateway"]
    head = [f"per run: median (min-max) of {result['runs_per_variant']}"]
    head += [LABELS[v] for v in variants] + [f"{v} / gateway" for v in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label in SUMMARY_FIELDS:
        cells = [label]
        for v in variants:
            x = s[v][name]
            cells.append(f"{x['median']:g} ({x['min']:g}-{x['max']:g})")
        g = s["gateway"][name]["median"] if "gateway" in s else 0
        cells += [f"{s[v][name]['median'] / g:.2f}" if g else "-" for v in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


async def parent(args: argparse.Namespace) -> dict[str, Any]:
    binary = find_etcd()
    if binary is None:
        raise SystemExit("no etcd binary (make peers)")
    data = templates(args.keys)
    sizes = sorted(len(v) for _, v in data)
    result: dict[str, Any] = {
        "keys": args.keys,
        "value_bytes_median": sizes[len(sizes) // 2],
        "rate": args.rate,
        "txn_ms": args.txn_ms,
        "duration_s": args.duration,
        "runs_per_variant": args.runs,
        "variants": args.variants,
        "cpus": os.cpu_count(),
        "load1_before": round(os.getloadavg()[0], 2),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        etcd = LocalEtcd(binary, Path(tmp) / "etcd")
        etcd.start()
        try:
            await preload(etcd.url, data)
            await trio.sleep(args.settle)  # let etcd finish with the preload before measuring
            for rnd in range(args.runs):
                k = rnd % len(args.variants)  # rotate: each variant goes first in turn
                order = args.variants[k:] + args.variants[:k]
                for variant in order:
                    run = await one_run(variant, etcd, data, args)
                    run["round"] = rnd
                    result["runs"].append(run)
                    print(json.dumps(run), file=sys.stderr)
        finally:
            etcd.stop()
    result["summary"] = summarise(result["runs"])
    result["valid"] = all(
        (r["delivered_fraction"] or 0) >= 0.99 and r["writer"]["rate"] >= 0.99 * args.rate
        for r in result["runs"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per variant (alternating)")
    p.add_argument("--duration", type=float, default=20.0, help="write window per run (s)")
    p.add_argument("--drain", type=float, default=1.0, help="wait after the last write (s)")
    p.add_argument("--rate", type=float, default=1000.0, help="puts per second")
    p.add_argument("--txn-ms", type=float, default=5.0, help="one etcd txn every N ms")
    p.add_argument("--keys", type=int, default=20000)
    p.add_argument("--settle", type=float, default=3.0, help="pause after the preload (s)")
    p.add_argument("--variants", type=lambda v: v.split(","), default=list(VARIANTS))
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--etcd", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        trio.run(child, args.child, args.etcd)
        return 0
    result = trio.run(parent, args)
    write_result("bench_etcd_watch", result)
    (RESULTS / "bench_etcd_watch.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
