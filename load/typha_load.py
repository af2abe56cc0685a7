"""``typha-load``: simulate N nodes against running Typhas while churning pods in the real etcd.

    typha-load --typha 127.0.0.1:5473 --etcd http://127.0.0.1:2379 --clients 200 \\
        --rate 100 --duration 60 --json out.json --plot out.png

* N clients (``load.lightclient``) over ``--processes`` worker processes, each a real protocol
  client. ``--full`` makes every client keep and check its state; otherwise ``--full-clients``
  (default 2) of them do, so that the convergence check always has something to check.
* With ``--etcd``: ``--pods`` pods are created first, then pods are created, relabelled and
  deleted at ``--rate`` operations per second for ``--duration`` seconds. Each pod is a
  WorkloadEndpoint built by ``typha.resources.workload_endpoint_for_pod`` and written with
  ``typha.sync.etcd_writer``. Every create/relabel carries its write time in the annotation
  ``stamp`` (the etcd v3 WorkloadEndpoint conversion keeps all annotations), which the clients
  turn into write → client latency. Deletions carry no stamp and are not in the latency.
* At the end, once churn has stopped: the convergence check. etcd is range-read, converted
  with ``typha.sync.convert.convert_etcd_kv`` through a ``ResourceExpander`` (as the etcd
  datastore does), filtered to the felix syncer, and compared with every full client's state:
  digests, and lost / ghost / stale key counts, summed over clients (never assumed zero).
* Typha's RSS and CPU seconds come from /proc for the pid given with ``--typha-pid``, else the
  ``pid`` on its ``--typha-status`` endpoint, else the local process listening on the port.

Progress goes to stderr; the result to ``--json`` (and stdout); the plot to ``--plot``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import psutil
import trio

from .harness import (
    WorkerPool,
    cpu_seconds,
    fetch_text,
    latency_summary,
    parse_prometheus,
    rss_bytes,
)
from .lightclient import FULL, LIGHT, parse_address, state_digest

NAMESPACES = 10
POD_PREFIX = "load-pod-"


# --- Typha processes ------------------------------------------------------------------------------


def find_typha_pids(args: argparse.Namespace, *, rediscover: bool = False) -> list[int]:
    """Typha pids: --typha-pid, else /status "pid", else whoever listens on the port locally.

    ``rediscover`` skips --typha-pid (after a Typha restarted, the given pid is gone)."""
    if args.typha_pid and not rediscover:
        return list(args.typha_pid)
    pids: list[int] = []
    for url in args.typha_status or ():
        with contextlib.suppress(Exception):
            host_port = url.split("://", 1)[-1].split("/", 1)[0]
            host, port = parse_address(host_port, 9098)
            status = json.loads(fetch_text(host, port, "/status"))
            if status.get("pid"):
                pids.append(int(status["pid"]))
    if pids:
        return pids
    ports = {parse_address(a)[1] for a in args.typha}
    with contextlib.suppress(psutil.AccessDenied):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid:
                pids.append(c.pid)
    return sorted(set(pids))


def typha_usage(pids: Sequence[int]) -> dict[int, tuple[float, int]]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out[pid] = (cpu_seconds(pid), rss_bytes(pid))
    return out


# Typha's own timings, read from its /metrics before and after the churn (``--typha-metrics``).
_SPLIT_SUMMARIES = {
    "conversion": "typha_datastore_convert_secs",
    "batching_window": "typha_fanout_wait_secs",
    "fanout_run": "typha_fanout_run_secs",
    # Not a part of the sum: Typha's ping → the client's pong, a gauge of how late the clients
    # (and Typha's own reading) are, to tell the client's share of the rest.
    "ping_rtt": "typha_ping_latency",
}


def scrape_split(urls: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Summary name → (sum, count) over the felix syncer of every Typha in ``urls``."""
    out: dict[str, tuple[float, float]] = {}
    for url in urls:
        host_port, _, path = url.split("://", 1)[-1].partition("/")
        host, port = parse_address(host_port, 9093)
        with contextlib.suppress(Exception):
            samples = parse_prometheus(fetch_text(host, port, "/" + (path or "metrics")))
            for name in _SPLIT_SUMMARIES.values():
                s, c = out.get(name, (0.0, 0.0))
                label = "" if name.startswith("typha_datastore") else '{syncer="felix"}'
                s += samples.get(f"{name}_sum{label}", 0.0)
                c += samples.get(f"{name}_count{label}", 0.0)
                out[name] = (s, c)
    return out


def latency_split(
    lat_ms: Sequence[float],
    commit_ms: Sequence[float],
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    """Where the write → client time goes, as means over the churn (ms): etcd commit (the
    writer's txn); from Typha's /metrics the conversion of a watch response, the coalescing
    window and half a fan-out run (a client's write comes on average half-way through a run);
    and the rest (etcd's watch delivery including Typha reading and decoding the response,
    and the client's read and parse). The parts are means of different populations (per put
    txn, per update, per KV, per run), so the rest is an estimate."""
    out: dict[str, Any] = {"etcd_commit_ms": latency_summary(commit_ms)}
    if not lat_ms:
        return out
    total = sum(lat_ms) / len(lat_ms)
    commit = sum(commit_ms) / len(commit_ms) if commit_ms else None
    means: dict[str, float | None] = {}
    for part, name in _SPLIT_SUMMARIES.items():
        if name in before and name in after:
            ds = after[name][0] - before[name][0]
            dc = after[name][1] - before[name][1]
            means[part] = ds / dc * 1000 if dc else None
        else:
            means[part] = None
    run = means["fanout_run"]
    parts = {
        "end_to_end": total,
        "etcd_commit": commit,
        "conversion": means["conversion"],
        "batching_window": means["batching_window"],
        "fanout_half_run": None if run is None else run / 2,
        "fanout_run": run,
    }
    known = [
        parts["etcd_commit"],
        parts["conversion"],
        parts["batching_window"],
        parts["fanout_half_run"],
    ]
    parts["watch_delivery_client_rest"] = (
        None if None in known else total - sum(k for k in known if k is not None)
    )
    parts["ping_rtt"] = means["ping_rtt"]
    out["mean_ms"] = {k: None if v is None else round(v, 2) for k, v in parts.items()}
    return out


# --- Pods -------------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    namespace: str
    node: str
    ip: str
    app: str
    generation: int = 0


@dataclass
class Churn:
    """Pods in etcd and the operations that change them."""

    nodes: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    pods: dict[str, Pod] = field(default_factory=dict)
    next_id: int = 0
    ops: dict[str, int] = field(default_factory=lambda: {"create": 0, "relabel": 0, "delete": 0})
    errors: int = 0
    last_error: str = ""
    commit_ms: list[float] = field(default_factory=list)  # stamp → etcd's answer, per put txn

    def new_pod(self) -> Pod:
        i = self.next_id
        self.next_id += 1
        return Pod(
            name=f"{POD_PREFIX}{i}",
            namespace=f"load-ns-{i % NAMESPACES}",
            node=self.nodes[i % len(self.nodes)],
            ip=f"10.{64 + (i >> 16) % 64}.{(i >> 8) & 255}.{i & 255}",
            app=f"app-{i % 20}",
        )

    @staticmethod
    def resource(pod: Pod, stamp: float | None) -> dict[str, Any]:
        from typha.resources import workload_endpoint_for_pod

        res = workload_endpoint_for_pod(
            pod.node,
            pod.namespace,
            pod.name,
            pod.ip,
            {"app": pod.app, "generation": str(pod.generation)},
        )
        if stamp is not None:
            # Annotations survive the etcd v3 WorkloadEndpoint conversion (all of them are
            # copied); the Kubernetes pod conversion would keep only qos.* annotations.
            res["metadata"]["annotations"] = {"stamp": f"{stamp:.6f}"}
        return res

    def pick(self, target: int) -> str:
        n = len(self.pods)
        if n < target * 0.9:
            return "create"
        if n > target * 1.1:
            return "delete"
        r = self.rng.random()
        return "create" if r < 0.25 else ("delete" if r < 0.5 else "relabel")


async def write_ops(client: Any, churn: Churn, n: int, target: int) -> None:
    """Perform ``n`` operations: puts in one batch, deletes in another (etcd txns)."""
    from typha.sync.etcd_writer import apply_resources, delete_resources

    puts: dict[str, Pod] = {}
    deletes: dict[str, Pod] = {}
    for _ in range(n):
        op = churn.pick(target)
        if op == "create" or not churn.pods:
            pod = churn.new_pod()
            churn.pods[pod.name] = pod
            puts[pod.name] = pod
            churn.ops["create"] += 1
            continue
        name = churn.rng.choice(list(churn.pods)) if len(churn.pods) < 5000 else None
        if name is None:  # large populations: avoid materialising the key list every time
            name = f"{POD_PREFIX}{churn.rng.randrange(churn.next_id)}"
            if name not in churn.pods:
                continue
        pod = churn.pods[name]
        if name in puts or name in deletes:
            continue  # one operation per pod per batch keeps the txn valid and the order clear
        if op == "delete":
            del churn.pods[name]
            deletes[name] = pod
            churn.ops["delete"] += 1
        else:
            pod.generation += 1
            puts[name] = pod
            churn.ops["relabel"] += 1
    now = time.time()
    try:
        if puts:
            await apply_resources(client, [Churn.resource(p, now) for p in puts.values()])
            # The stamp was taken before the txn: this is the etcd-commit part of the latency.
            churn.commit_ms.append((time.time() - now) * 1000)
        if deletes:
            await delete_resources(client, [Churn.resource(p, None) for p in deletes.values()])
    except Exception as exc:  # count and go on: a load tool reports failures, it does not stop
        churn.errors += 1
        churn.last_error = f"{type(exc).__name__}: {exc}"


async def cleanup(client: Any, churn: Churn) -> None:
    from typha.sync.etcd_writer import delete_resources

    pods = list(churn.pods.values())
    for i in range(0, len(pods), 500):
        await delete_resources(client, [Churn.resource(p, None) for p in pods[i : i + 500]])
    churn.pods.clear()


# --- Expected state -----------------------------------------------------------------------------


async def expected_felix_state(client: Any) -> tuple[dict[str, bytes], int, int]:
    """The felix syncer's state as Typha should serve it, from one consistent range read of
    etcd: (key → packed value, revision, invalid etcd values skipped)."""
    from typha.model.keys import SyncerType, syncer_types_for
    from typha.sync.base import ResourceExpander
    from typha.sync.convert import CALICO_ETCD_PREFIXES, InvalidResource, convert_etcd_kv
    from typha.sync.etcd_client import prefix_range_end
    from typha.sync.synthetic import synthetic_updates

    expander = ResourceExpander()
    state: dict[str, Any] = {}
    invalid = 0
    start = min(CALICO_ETCD_PREFIXES)
    end = max(prefix_range_end(p) for p in CALICO_ETCD_PREFIXES)
    revision = 0
    pages = client.range_paginated(start, range_end=end, page_size=1000)
    async with contextlib.aclosing(pages):
        async for page in pages:
            revision = page.revision
            for kv in page.kvs:
                if not kv.key.startswith(CALICO_ETCD_PREFIXES):
                    continue
                try:
                    obj = json.loads(kv.value)
                    updates = convert_etcd_kv(kv.key, obj) if isinstance(obj, dict) else None
                except (ValueError, InvalidResource):
                    updates = None
                if updates is None:
                    invalid += 1
                    updates = []
                for u in expander.expand(kv.key, updates):
                    if u.value is None:
                        state.pop(u.key, None)
                    else:
                        state[u.key] = u.value
    # What Typha adds that no datastore stores (the default-allow profile).
    state.update((u.key, u.value) for u in synthetic_updates())
    felix = {
        k: msgpack.packb(v, use_bin_type=True)
        for k, v in state.items()
        if SyncerType.FELIX in syncer_types_for(k)
    }
    return felix, revision, invalid


# --- Reporting --------------------------------------------------------------------------------


_last_line = 0.0


def progress(msg: str, *, force: bool = False) -> None:
    """One status line on stderr: rewritten in place on a terminal, else every 5 s."""
    global _last_line
    if sys.stderr.isatty():
        print("\r\x1b[2K" + msg, end="", file=sys.stderr, flush=True)
        return
    now = time.monotonic()
    if msg and (force or now - _last_line >= 5.0):
        _last_line = now
        print(msg, file=sys.stderr, flush=True)


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    in_sync: list[int] = field(default_factory=list)
    p50: list[float | None] = field(default_factory=list)
    p99: list[float | None] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)


def plot(series: Series, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    ax1.plot(series.t, series.p50, label="p50")
    ax1.plot(series.t, series.p99, label="p99")
    ax1.set_ylabel("write → client latency (ms)")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.set_title(title)
    ax2.plot(series.t, series.in_sync, "g", label="clients in sync")
    ax2.set_ylabel("clients in sync")
    ax2.set_xlabel("seconds since the clients started")
    ax3 = ax2.twinx()
    ax3.plot(series.t, series.delivered, "b:", label="client-updates/s")
    ax3.set_ylabel("client-updates/s", color="b")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --- Main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    full_clients = args.clients if args.full else min(args.full_clients, args.clients)
    pids = find_typha_pids(args)
    nodes = [f"load-node-{i}" for i in range(args.clients)]
    churn = Churn(nodes)
    result: dict[str, Any] = {
        "typha": args.typha,
        "typha_pids": pids,
        "clients": args.clients,
        "full_clients": full_clients,
        "rate": args.rate,
        "duration_s": args.duration,
    }
    etcd: Any = None
    async with contextlib.AsyncExitStack() as stack:
        if args.etcd:
            from typha.sync.etcd_client import EtcdClient

            etcd = await stack.enter_async_context(EtcdClient(args.etcd))
            progress(f"creating {args.pods} pods in etcd")
            seed: list[Pod] = []
            for _ in range(args.pods):
                pod = churn.new_pod()
                churn.pods[pod.name] = pod
                seed.append(pod)
            from typha.sync.etcd_writer import apply_resources

            now = time.time()
            for i in range(0, len(seed), 500):
                await apply_resources(etcd, [Churn.resource(p, now) for p in seed[i : i + 500]])
            churn.ops["create"] += len(seed)
        # One pool; the full clients are spread over its processes (the first of each).
        pools = [
            WorkerPool(
                args.typha,
                args.clients,
                processes=max(1, min(args.processes, args.clients)),
                mode=FULL if args.full else LIGHT,
                full_clients=full_clients,
                sample=args.sample,
                compression=args.compression,
            )
        ]
        usage0 = typha_usage(pids)
        t_start = time.time()
        for p in pools:
            p.start()
        stack.callback(lambda: [p.stop() for p in pools])

        def sums() -> dict[str, float]:
            out: dict[str, float] = {}
            for p in pools:
                for k, v in p.snapshot().sums.items():
                    out[k] = out.get(k, 0) + v
            return out

        def first_sync_max() -> float | None:
            vals = [p.snapshot().first_sync_max for p in pools]
            return None if None in vals else max(v for v in vals if v is not None)

        series = Series()
        split0: dict[str, tuple[float, float]] = {}
        all_sync_at: float | None = None
        churn_started: float | None = None
        last_t, last_kvs, last_ops = time.time(), 0.0, 0
        deadline_sync = t_start + args.sync_timeout
        writer_tick = 0.01
        owed = 0.0
        last_loop = time.time()
        kvs_at_churn = 0.0
        next_report = time.time() + 1.0
        while True:
            now = time.time()
            s = sums()
            if all_sync_at is None and s.get("ever_in_sync", 0) >= args.clients:
                all_sync_at = first_sync_max() or now
            if churn_started is None and (all_sync_at is not None or now > deadline_sync):
                churn_started = now  # after the deadline: churn anyway, report the shortfall
                kvs_at_churn = s.get("kvs_delta", 0)
                split0 = scrape_split(args.typha_metrics or ())
            if churn_started is not None and now - churn_started >= args.duration:
                break
            # Open loop: operations fall due with wall time, however long the writes take.
            step, last_loop = now - last_loop, now
            if churn_started is not None and etcd is not None and args.rate > 0:
                owed += args.rate * step
                n = int(owed)
                if n:
                    owed -= n
                    await write_ops(etcd, churn, n, args.pods)
            if now >= next_report:
                next_report += 1.0
                lat = [x for p in pools for x in p.latencies(now - 1.0, now)]
                lat.sort()
                ops = sum(churn.ops.values())
                kvs = s.get("kvs_delta", 0)
                dt = now - last_t
                series.t.append(round(now - t_start, 2))
                series.in_sync.append(int(s.get("in_sync", 0)))
                series.p50.append(lat[len(lat) // 2] if lat else None)
                series.p99.append(lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None)
                series.delivered.append((kvs - last_kvs) / dt if dt else 0.0)
                series.writes.append((ops - last_ops) / dt if dt else 0.0)
                last_t, last_kvs, last_ops = now, kvs, ops
                phase = "sync" if churn_started is None else "churn"
                elapsed = 0.0 if churn_started is None else now - churn_started
                progress(
                    f"[{phase} {elapsed:5.0f}/{args.duration:g}s] in sync "
                    f"{int(s.get('in_sync', 0))}/{args.clients} | writes {series.writes[-1]:.0f}/s "
                    f"| delivered {series.delivered[-1]:,.0f}/s | p99 "
                    f"{series.p99[-1] if series.p99[-1] is not None else '-'} ms "
                    f"| reconnects {int(s.get('disconnects', 0))} | etcd errors {churn.errors}"
                )
            await trio.sleep(writer_tick)
        churn_ended = time.time()
        split1 = scrape_split(args.typha_metrics or ())
        usage1 = typha_usage(pids)
        pids_end = pids
        if len(usage1) < len(pids):  # a Typha restarted (or died): find what serves now
            pids_end = find_typha_pids(args, rediscover=True)
            usage1 = {**usage1, **typha_usage([p for p in pids_end if p not in usage1])}
        result["typha_pids_end"] = pids_end
        s = sums()
        lat_all = [x for p in pools for x in p.latencies(churn_started or t_start)]
        churn_secs = churn_ended - (churn_started or t_start)
        result.update(
            {
                "clients_in_sync": int(s.get("in_sync", 0)),
                "time_to_all_in_sync_s": round(all_sync_at - t_start, 3) if all_sync_at else None,
                "update_latency_ms": latency_summary(lat_all),
                "latency_split": latency_split(lat_all, churn.commit_ms, split0, split1),
                "client_updates_per_s": round(
                    (s.get("kvs_delta", 0) - kvs_at_churn) / churn_secs, 1
                )
                if churn_secs > 0
                else 0.0,
                "writes": dict(churn.ops),
                "write_rate_achieved": round((sum(churn.ops.values()) - args.pods) / churn_secs, 1)
                if etcd is not None and churn_secs > 0
                else None,
                "etcd_errors": churn.errors,
                "etcd_last_error": churn.last_error,
                "reconnects": int(s.get("disconnects", 0)),
                "snapshots": int(s.get("snapshots", 0)),
                "resumes": int(s.get("resumes", 0)),
                "protocol_errors": int(s.get("protocol_errors", 0)),
                "unstamped_samples": int(s.get("unstamped", 0)),
                "typha_rss_bytes": sum(u[1] for u in usage1.values()) if usage1 else None,
                # CPU over the run for the processes that lived through it; a replacement
                # started meanwhile counts from its start.
                "typha_cpu_s": round(
                    sum(usage1[p][0] - (usage0[p][0] if p in usage0 else 0.0) for p in usage1),
                    3,
                )
                if usage1
                else None,
                "clients_cpu_s": round(sum(p.cpu_s() for p in pools), 3),
            }
        )
        # Convergence: churn has stopped; wait for the full clients to match etcd.
        result.update(await converge(args, etcd, pools if full_clients else [], full_clients))
        if etcd is not None and not args.keep:
            progress("deleting the load's pods")
            await cleanup(etcd, churn)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        result["series"] = {
            "t": series.t,
            "in_sync": series.in_sync,
            "p50_ms": series.p50,
            "p99_ms": series.p99,
            "client_updates_per_s": series.delivered,
            "writes_per_s": series.writes,
        }
        if args.plot:
            plot(series, args.plot, f"typha-load: {args.clients} clients, {args.rate:g} writes/s")
    return result


async def converge(
    args: argparse.Namespace, etcd: Any, full_pools: list[WorkerPool], full_clients: int
) -> dict[str, Any]:
    if not full_pools or etcd is None:
        return {
            "convergence": "skipped: needs --etcd and at least one full client",
            "lost_keys": None,
            "ghost_keys": None,
        }
    deadline = time.monotonic() + args.settle
    rows: list[dict[str, Any]] = []
    expected: dict[str, bytes] = {}
    revision = invalid = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "expected.msgpack")
        while True:
            expected, revision, invalid = await expected_felix_state(etcd)
            with open(path, "wb") as f:
                f.write(msgpack.packb(expected, use_bin_type=True))
            rows = []
            for pool in full_pools:
                for w in pool.workers:
                    reply = await trio.to_thread.run_sync(
                        lambda w=w: w.request({"cmd": "verify", "path": path}, "verify", 300)
                    )
                    rows.extend(reply["rows"])
            matched = sum(1 for r in rows if r["match"])
            progress(
                f"convergence: {matched}/{len(rows)} full clients match etcd@{revision}",
                force=True,
            )
            if matched == len(rows) or time.monotonic() > deadline:
                break
            await trio.sleep(1.0)
    return {
        "convergence": "ok" if all(r["match"] for r in rows) else "MISMATCH",
        "expected_keys": len(expected),
        "expected_digest": state_digest(expected, packed=True),
        "etcd_revision": revision,
        "etcd_invalid_values": invalid,
        "full_clients_checked": len(rows),
        "full_clients_matching": sum(1 for r in rows if r["match"]),
        "lost_keys": sum(r["lost"] for r in rows),
        "ghost_keys": sum(r["ghost"] for r in rows),
        "stale_keys": sum(r["stale"] for r in rows),
        "mismatches": [r for r in rows if not r["match"]][:10],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="typha-load", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--typha", action="append", required=True, help="HOST:PORT (repeatable)")
    p.add_argument("--etcd", default="", help="etcd URL(s), comma-separated: churn goes there")
    p.add_argument("--clients", type=int, default=100, help="simulated nodes")
    p.add_argument("--rate", type=float, default=10.0, help="pod operations per second")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of churn")
    p.add_argument("--full", action="store_true", help="every client keeps and checks state")
    p.add_argument("--full-clients", type=int, default=2, help="full clients without --full")
    p.add_argument("--processes", type=int, default=2, help="client worker processes")
    p.add_argument("--pods", type=int, default=1000, help="pods created before the churn")
    p.add_argument("--sample", type=float, default=0.05, help="P(latency sample) per delta KV")
    p.add_argument("--compression", action="store_true", help="clients offer zstd")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--plot", default="", help="write a PNG here")
    p.add_argument("--typha-pid", type=int, action="append", help="Typha's pid (repeatable)")
    p.add_argument("--typha-status", action="append", help="Typha status URL (has its pid)")
    p.add_argument(
        "--typha-metrics",
        action="append",
        help="Typha /metrics URL (repeatable): its fan-out timings split the latency",
    )
    p.add_argument("--sync-timeout", type=float, default=120.0, help="wait for all in sync")
    p.add_argument("--settle", type=float, default=30.0, help="wait for convergence")
    p.add_argument("--keep", action="store_true", help="leave the load's pods in etcd")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = trio.run(run, args)
    text = json.dumps(result, indent=1)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(text)
    summary = {k: v for k, v in result.items() if k not in ("series", "mismatches")}
    print(json.dumps(summary, indent=1))
    ok = result.get("convergence") in ("ok",) or result.get("lost_keys") is None
    return 0 if ok and result.get("clients_in_sync") == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
