"""typha-py's cold start with ``EtcdAPI=gateway`` vs ``EtcdAPI=grpc``, on the bench-vs-go etcd
data (the same etcd for both, runs alternating which API goes first).

    python -m load.coldstart_etcdapi --endpoints 20000 --pairs 3

Each start is ``load.coldstart``'s: a gobload client is already retrying when typha-py (the
runtime-only environment, pinned to ``--cpu``) is exec'd; measured are exec → that client in
sync, typha-py's CPU seconds at that moment, and etcd's CPU seconds over the whole start (its
list, the watch set-up, the probe). Then, in this process, the list alone (the datastore's
prefix in pages of 1,000, as the datastore reads it) through each client, ``--list-runs``
times each, alternating: this process's CPU seconds, etcd's, and the wall time. Writes
``.load-results/coldstart-etcdapi-<n>-<stamp>.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench_vs_go import DATA_ROOT, REPO, etcd_on, prepare_data, runtime_python, tree_cpu_rss
from .coldstart import cold_start

APIS = ("gateway", "grpc")
LIST_PREFIX = "/calico/resources/v3/projectcalico.org/"


def list_once(api: str, url: str) -> int:
    """The paged list through ``api``'s client, in a trio run of its own."""
    import trio

    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_grpc import GrpcEtcdClient

    async def run() -> int:
        cls = GrpcEtcdClient if api == "grpc" else EtcdClient
        async with cls([url]) as client:
            n = 0
            async for page in client.range_paginated(LIST_PREFIX, page_size=1000):
                n += len(page.kvs)
            return n

    return trio.run(run)


def list_runs(url: str, etcd_pid: int, runs: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {api: [] for api in APIS}
    for api in APIS:
        list_once(api, url)  # imports and connections warmed
    for i in range(runs):
        for api in APIS if i % 2 == 0 else APIS[::-1]:
            etcd0, cpu0, wall0 = tree_cpu_rss(etcd_pid)[0], time.process_time(), time.perf_counter()
            keys = list_once(api, url)
            out[api].append(
                {
                    "keys": keys,
                    "cpu_s": time.process_time() - cpu0,
                    "etcd_cpu_s": tree_cpu_rss(etcd_pid)[0] - etcd0,
                    "wall_s": time.perf_counter() - wall0,
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=20000)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--cpu", default="1")
    p.add_argument("--list-runs", type=int, default=6)
    ns = p.parse_args(argv)
    results = REPO / ".load-results"
    results.mkdir(exist_ok=True)
    template = prepare_data(ns.endpoints, results / "etcd.log")
    py_python = runtime_python()
    runs: dict[str, list[dict[str, float]]] = {api: [] for api in APIS}
    out: dict[str, Any] = {"endpoints": ns.endpoints, "cpu": ns.cpu, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=DATA_ROOT, prefix="coldstart-api-") as tmp:
        work = Path(tmp)
        shutil.copytree(template / "data", work / "data")
        with etcd_on(work / "data", results / "etcd.log") as (url, etcd):
            cold_start("py", url, work, ns.cpu, {}, py_python)  # warm the page cache
            for i in range(ns.pairs):
                for api in APIS if i % 2 == 0 else APIS[::-1]:
                    etcd_before = tree_cpu_rss(etcd.pid)[0]
                    load = os.getloadavg()[0]
                    st = cold_start("py", url, work, ns.cpu, {"TYPHA_ETCDAPI": api}, py_python)
                    run = {
                        "sync_s": st.sync_s,
                        "typha_cpu_s": st.cpu_s,
                        "etcd_cpu_s": tree_cpu_rss(etcd.pid)[0] - etcd_before,
                        "load": load,
                        **{f"{k}_s": v for k, v in st.phases.items()},
                    }
                    runs[api].append(run)
                    print(json.dumps({"api": api, **run}), file=sys.stderr)
            lists = list_runs(url, etcd.pid, ns.list_runs)
    out["runs"] = runs
    out["median"] = {
        api: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for api, rs in runs.items()
    }
    out["ratio_grpc_to_gateway"] = {
        k: out["median"]["grpc"][k] / out["median"]["gateway"][k]
        for k in ("sync_s", "typha_cpu_s", "etcd_cpu_s")
    }
    out["list"] = lists
    out["list_median"] = {
        api: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for api, rs in lists.items()
    }
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (results / f"coldstart-etcdapi-{ns.endpoints}-{stamp}.json").write_text(
        json.dumps(out, indent=1)
    )


if __name__ == "__main__":
    main()
