"""etcd-mode figures for docs/benchmarks.md (`python -m load.bench_etcd`).

1. Watches held on etcd by one Typha with 1 and with 500 connected clients, read from etcd's
   own metrics (they must not grow with clients).
2. Warm restart with 20,000 keys: a Typha started from its cache file watches from the saved
   revision (no full list) and 50 reconnecting clients resume without snapshots; compared with a
   cold start (full list, snapshots).

Typha runs as a `typha serve` subprocess; etcd is a real etcd on loopback (tmpfs data dir);
clients run in this process. Results go to .load-results/bench_etcd.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from felix_client.sync_client import SyncClient
from load.harness import write_result
from load.local_etcd import LocalEtcd, find_etcd, free_port
from load.stack import typha_env
from typha.resources import workload_endpoint_for_pod
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources


def etcd_watchers(metrics_text: str) -> dict[str, float]:
    out = {}
    for name in ("etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total"):
        m = re.search(rf"^{name} (\S+)$", metrics_text, re.M)
        if m:
            out[name] = float(m.group(1))
    return out


def start_typha(
    etcd_url: str, port: int, health: int, cache: str | None
) -> subprocess.Popen[bytes]:
    log_level = os.environ.get("TYPHA_LOGSEVERITYSCREEN", "WARNING")
    env = typha_env(etcd_url, port, health, metrics=None, shutdown_secs=2, log_level=log_level)
    if cache:
        env["TYPHA_CACHEFILEPATH"] = cache
    return subprocess.Popen([sys.executable, "-m", "typha.cli", "serve"], env=env)


async def wait_ready(health: int, timeout: float = 120) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient() as http:
        with trio.fail_after(timeout):
            while True:
                try:
                    r = await http.get(f"http://127.0.0.1:{health}/readiness")
                    if r.status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)


async def status(health: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{health}/status")).json()  # type: ignore[no-any-return]


async def connect(
    addr: str, n: int, nursery: trio.Nursery, prefix: str, *, keep_state: bool = True
) -> list[SyncClient]:
    # keep_state=False: 500 in-process copies of a 20k-key state would need ~10 GB.
    clients = [
        SyncClient([addr], f"{prefix}{i}", backoff_cap=0.5, keep_state=keep_state) for i in range(n)
    ]
    for c in clients:
        nursery.start_soon(c.run)
    with trio.fail_after(300):
        for c in clients:
            await c.in_sync.wait()
    return clients


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    binary = find_etcd()
    if binary is None:
        raise SystemExit("no etcd binary (make setup)")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        etcd = LocalEtcd(binary, Path(tmp) / "etcd")
        etcd.start()
        try:
            async with EtcdClient([etcd.url]) as client:
                pods = [
                    workload_endpoint_for_pod(
                        f"node{i % 50}",
                        f"ns{i % 20}",
                        f"pod-{i}",
                        f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                        {"app": f"a{i % 7}"},
                    )
                    for i in range(args.keys)
                ]
                t0 = time.monotonic()
                await apply_resources(client, pods)
                out["write_keys"] = {"keys": args.keys, "secs": round(time.monotonic() - t0, 2)}

            # --- 1. watches on etcd with 1 and with N clients ---------------------------------
            port, health = free_port(), free_port()
            cache = str(Path(tmp) / "typha-cache.msgpack")
            proc = start_typha(etcd.url, port, health, cache)
            try:
                cold_ready = await wait_ready(health)
                base = etcd_watchers(httpx.get(etcd.url + "/metrics").text)
                async with trio.open_nursery() as nursery:
                    one = await connect(f"127.0.0.1:{port}", 1, nursery, "one")
                    w1 = etcd_watchers(httpx.get(etcd.url + "/metrics").text)
                    many = await connect(
                        f"127.0.0.1:{port}", args.clients - 1, nursery, "many", keep_state=False
                    )
                    wn = etcd_watchers(httpx.get(etcd.url + "/metrics").text)
                    out["etcd_watchers"] = {
                        "typha_only": base,
                        "1_client": w1,
                        f"{args.clients}_clients": wn,
                    }
                    out["cold_start"] = {
                        "ready_secs": round(cold_ready, 2),
                        "snapshots_per_client": one[0].stats.snapshots,
                    }
                    del many
                    nursery.cancel_scope.cancel()

                # --- 2. warm restart with keys, 50 clients ------------------------------------
                async with trio.open_nursery() as nursery:
                    clients = await connect(f"127.0.0.1:{port}", args.warm_clients, nursery, "w")
                    proc.terminate()  # SIGTERM: drain, save the cache
                    await trio.to_thread.run_sync(proc.wait)
                    t_restart = time.monotonic()
                    proc = start_typha(etcd.url, port, health, cache)
                    warm_ready = await wait_ready(health)
                    with trio.fail_after(120):
                        while not all(c.stats.resumes >= 1 and c.in_sync.is_set() for c in clients):
                            await trio.sleep(0.05)
                    all_resumed = time.monotonic() - t_restart
                    st = await status(health)
                    out["warm_restart"] = {
                        "keys": args.keys,
                        "clients": len(clients),
                        "cache_file_bytes": os.path.getsize(cache),
                        "ready_secs_after_start": round(warm_ready, 2),
                        "all_clients_resumed_secs": round(all_resumed, 2),
                        "snapshots_per_client": sorted({c.stats.snapshots for c in clients}),
                        "resumed_clients": sum(1 for c in clients if c.stats.resumes >= 1),
                        "resumed_how": sorted(
                            {c["resumed"] for c in st["clients"] if c["resumed"]}
                        ),
                        "datastore": st["datastore"],
                    }
                    nursery.cancel_scope.cancel()
            finally:
                proc.terminate()
                proc.wait(30)
        finally:
            etcd.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--warm-clients", type=int, default=50)
    args = parser.parse_args(argv)
    from typha import logs

    logs.configure_logging(screen="WARNING")
    result = trio.run(bench, args)
    write_result("bench_etcd", result)
    logs.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
