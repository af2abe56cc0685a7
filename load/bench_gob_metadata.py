"""What the per-KV metadata Calico's protocol needs (revision, v3 resource version) costs in
memory: 20,000 workload endpoints (plus their history) applied to the felix view, with and
without revisions, each in a fresh process; RSS and traced allocations after the apply.

    python -m load.bench_gob_metadata [--endpoints 20000] [--out .load-results/gob_metadata.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tracemalloc
from typing import Any


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _wep(i: int) -> tuple[str, dict[str, Any]]:
    node = f"node{i % 200}"
    key = f"/calico/v1/host/{node}/workload/k8s/ns{i % 10}%2fpod-{i}/endpoint/eth0"
    return key, {
        "state": "active",
        "name": f"cali{i:011d}",
        "mac": "ee:ee:ee:ee:ee:ee",
        "profile_ids": [f"kns.ns{i % 10}"],
        "ipv4_nets": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"],
        "ipv6_nets": [],
        "labels": {"app": f"a{i % 7}", "projectcalico.org/namespace": f"ns{i % 10}"},
    }


def _child(endpoints: int, with_revisions: bool) -> dict[str, Any]:
    from typha.cache.feed import CacheFeed
    from typha.model.keys import SyncerType
    from typha.sync.base import ResyncFinished, ResyncStarted, Update, Updates

    items = [_wep(i) for i in range(endpoints)]
    feed = CacheFeed.create([SyncerType.FELIX])
    rss0 = _rss_kib()
    tracemalloc.start()
    feed.apply(ResyncStarted())
    rev = 1000
    for start in range(0, endpoints, 1000):
        batch = []
        for key, value in items[start : start + 1000]:
            rev += 1
            batch.append(Update(key, value, str(rev) if with_revisions else None))
        feed.apply(Updates(batch, rev))
    feed.apply(ResyncFinished(rev))
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"traced_bytes": traced, "rss_kib": _rss_kib() - rss0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoints", type=int, default=20_000)
    p.add_argument("--out", default=".load-results/gob_metadata.json")
    p.add_argument("--child", choices=["with", "without"])
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.endpoints, args.child == "with")))
        return
    result: dict[str, Any] = {"endpoints": args.endpoints}
    for mode in ("without", "with"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "load.bench_gob_metadata",
                "--child",
                mode,
                "--endpoints",
                str(args.endpoints),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result[mode] = json.loads(out.strip().splitlines()[-1])
    result["cost_traced_bytes"] = result["with"]["traced_bytes"] - result["without"]["traced_bytes"]
    result["cost_rss_kib"] = result["with"]["rss_kib"] - result["without"]["rss_kib"]
    result["cost_bytes_per_endpoint"] = round(result["cost_traced_bytes"] / args.endpoints, 1)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
