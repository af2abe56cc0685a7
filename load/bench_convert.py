"""The cold start's conversion step alone, in one process: N listed WorkloadEndpoints from etcd
bytes to stamped model updates, as ``EtcdDatastore`` does for each listed key (JSON decoding,
the v3 → model conversion, the per-source bookkeeping of the ``ResourceExpander``, the
revision stamp).

The values are the ones ``load.bench_vs_go`` writes into etcd (the same pods, encoded by
``typha.sync.etcd_writer``), made in process, so no etcd is needed. Each repetition converts
them with a fresh datastore object; the figure is CPU seconds (``time.process_time``) with the
collector tuned as the server tunes it while the first list loads.

    python -m load.bench_convert [--endpoints 20000] [--repeat 5] [--profile N]

Writes ``.load-results/bench_convert.json`` (or ``--out``). To compare two trees, run this file
with ``PYTHONPATH=<other tree>`` (it prints which ``typha`` it imported).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def listed_kvs(endpoints: int) -> list[Any]:
    """The list's ``KeyValue`` objects for ``endpoints`` pods (as ``prepare_data`` writes them)."""
    from typha.resources import workload_endpoint_for_pod
    from typha.sync.etcd_client import KeyValue
    from typha.sync.etcd_writer import encode_resource

    nodes = [f"node-{i}" for i in range(max(1, endpoints // 100))]
    kvs = []
    for i in range(endpoints):
        # load.typha_load.Churn.new_pod's pods, without importing the load tool.
        resource = workload_endpoint_for_pod(
            nodes[i % len(nodes)],
            f"load-ns-{i % 50}",
            f"load-pod-{i}",
            f"10.{64 + (i >> 16) % 64}.{(i >> 8) & 255}.{i & 255}",
            {"app": f"app-{i % 20}", "generation": "0"},
        )
        key, value = encode_resource(resource)
        kvs.append(KeyValue(key, value, 100 + i, 100 + i, 1))
    return kvs


def convert_all(kvs: list[Any]) -> list[Any]:
    """What ``EtcdDatastore._resync`` does for each listed key, without the paging."""
    from typha.sync.etcd import EtcdDatastore

    ds = EtcdDatastore(["http://127.0.0.1:1"])
    out: list[Any] = []
    for kv in kvs:
        out.extend(ds._on_put(kv, None))
    return out


def timed(kvs: list[Any]) -> float:
    saved = gc.get_threshold()
    gc.set_threshold(100_000, *saved[1:])  # as typha.gc_tuning does while the list loads
    try:
        c0 = time.process_time()
        convert_all(kvs)
        return time.process_time() - c0
    finally:
        gc.set_threshold(*saved)
        gc.collect()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    ap.add_argument("--out", type=Path, default=Path(".load-results/bench_convert.json"))
    ns = ap.parse_args(argv)

    import typha

    print(f"typha from {Path(typha.__file__).parent}", file=sys.stderr)
    kvs = listed_kvs(ns.endpoints)
    timed(kvs)  # warm-up: first-call costs (lazy imports, regex compiles) are not the steady cost
    secs = [timed(kvs) for _ in range(ns.repeat)]
    result = {
        "typha": str(Path(typha.__file__).parent),
        "endpoints": ns.endpoints,
        "convert_cpu_s": secs,
        "median_s": statistics.median(secs),
        "per_endpoint_us": statistics.median(secs) / ns.endpoints * 1e6,
    }
    print(json.dumps(result, indent=1))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=1) + "\n")
    if ns.profile:
        prof = cProfile.Profile()
        prof.runcall(convert_all, kvs)
        pstats.Stats(prof).sort_stats("tottime").print_stats(ns.profile)


if __name__ == "__main__":
    main()
