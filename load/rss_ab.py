"""typha-py's RSS, two source trees alternating (an A/B of a memory change):

    python -m load.rss_ab --endpoints 20000 --rounds 2 /path/to/tree-a /path/to/tree-b

Per run, on a fresh copy of the bench-vs-go etcd data: ``typha serve`` from the tree (its
runtime-only environment, pinned like bench-vs-go), RSS 2 s after readiness, the peak RSS
while ``--clients`` gob clients join, then ``--rate`` writes/s in 5 ms transactions for
``--duration`` s and RSS 3 s and 13 s after it. Prints one JSON line per run and writes them to
``.load-results/rss-ab-<time>.json``. Only typha-py: RSS hardly depends on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bench_vs_go import (
    DATA_ROOT,
    REPO,
    LoadClients,
    PeakRSS,
    churn_for,
    etcd_on,
    prepare_data,
    seeded_churn,
    start_server,
    stop_proc,
    tree_cpu_rss,
    wait_http,
)
from .local_etcd import free_port

MIB = 2**20


def tree_python(tree: Path) -> str:
    """The runtime-only interpreter of a checkout (made by its own bench_vs_go)."""
    out = subprocess.run(
        [sys.executable, "-c", "from load.bench_vs_go import runtime_python as r; print(r())"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def one_run(tree: Path, python: str, a: argparse.Namespace, template: Path, log: Path) -> dict:
    work = Path(DATA_ROOT) / "rss-ab"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        shutil.copytree(template / "data", work / "data")
        with etcd_on(work / "data", log) as (url, _):
            port = free_port()
            env = {"PYTHONPATH": str(tree)}
            # ``python -m`` puts its working directory first on sys.path, ahead of PYTHONPATH:
            # the server must start in the tree it measures, not in the one running this.
            here = os.getcwd()
            os.chdir(tree)
            try:
                server = start_server("py", url, a.cpu, work, port, extra_env=env, py_python=python)
            finally:
                os.chdir(here)
            clients: LoadClients | None = None
            peak: PeakRSS | None = None
            try:
                wait_http(server.ready_url, server.proc, 300)
                time.sleep(2.0)
                out: dict[str, Any] = {"tree": str(tree)}
                out["ready_mib"] = tree_cpu_rss(server.proc.pid)[1] / MIB
                peak = PeakRSS(server.proc.pid)
                peak.reset()
                clients = LoadClients("gob", f"127.0.0.1:{port}", a.clients, "n-", log)
                clients.wait_all_in_sync(300)
                time.sleep(3.0)
                out["join_peak_mib"] = peak.peak / MIB
                churn_for(url, seeded_churn(a.endpoints), a.rate, a.duration, 5.0)
                time.sleep(3.0)
                out["after_churn_3s_mib"] = tree_cpu_rss(server.proc.pid)[1] / MIB
                time.sleep(10.0)
                out["after_churn_13s_mib"] = tree_cpu_rss(server.proc.pid)[1] / MIB
                return out
            finally:
                if clients is not None:
                    clients.stop()
                if peak is not None:
                    peak.stop()
                stop_proc(server.proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--endpoints", type=int, default=20000)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cpu", default="1")
    a = p.parse_args(argv)
    results = REPO / ".load-results"
    results.mkdir(exist_ok=True)
    log = results / "rss-ab.log"
    template = prepare_data(a.endpoints, log)
    trees = [t.resolve() for t in a.trees]
    pythons = {t: tree_python(t) for t in trees}
    rows = []
    for _ in range(a.rounds):
        for tree in trees:
            row = one_run(tree, pythons[tree], a, template, log)
            rows.append(row)
            print(json.dumps(row), flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (results / f"rss-ab-{stamp}.json").write_text(
        json.dumps({"args": vars(a), "runs": rows}, default=str, indent=1)
    )


if __name__ == "__main__":
    main()
