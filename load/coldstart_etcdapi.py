"""typha-py's cold start with ``EtcdAPI=gateway`` vs ``EtcdAPI=grpc``, on the bench-vs-go etcd
data (the same etcd for both, runs alternating which API goes first).

    python -m load.coldstart_etcdapi --endpoints 20000 --pairs 3

Each start is ``load.coldstart``'s: a gobload client is already retrying when typha-py (the
runtime-only environment, pinned to ``--cpu``) is exec'd; measured are exec → that client in
sync, typha-py's CPU seconds at that moment, and etcd's CPU seconds over the whole start (its
list, the watch set-up, the probe). Writes ``.load-results/coldstart-etcdapi-<n>-<stamp>.json``
and prints it.
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=20000)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--cpu", default="1")
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
    out["runs"] = runs
    out["median"] = {
        api: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for api, rs in runs.items()
    }
    out["ratio_grpc_to_gateway"] = {
        k: out["median"]["grpc"][k] / out["median"]["gateway"][k]
        for k in ("sync_s", "typha_cpu_s", "etcd_cpu_s")
    }
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (results / f"coldstart-etcdapi-{ns.endpoints}-{stamp}.json").write_text(
        json.dumps(out, indent=1)
    )


if __name__ == "__main__":
    main()
