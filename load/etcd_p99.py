"""Write → client latency through real etcd in the shape of issue 14, item 3: 1,000 writes/s,
500 light clients, a real etcd on tmpfs and one ``typha serve`` pinned to one CPU, repeated
``--runs`` times on a fresh stack each. Prints and writes (JSON) p50/p99/max per run, the
achieved write rate, Typha's CPU per million client-updates and typha-load's latency split
(etcd commit, conversion, coalescing window, fan-out run, rest), with the 1-minute load average
before each run, because on a shared 2-core machine the tail measures the neighbours first.

    python -m load.etcd_p99 --runs 3
    python -m load.etcd_p99 --runs 4 --etcd-api gateway,grpc   # runs alternate the APIs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from load.stack import local_stack, typha_load_command

RESULTS = Path(".load-results")


def one_run(args: argparse.Namespace, i: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    apis = args.etcd_api.split(",") if args.etcd_api else ["default"]
    api = apis[i % len(apis)]
    env = {} if api == "default" else {"TYPHA_ETCDAPI": api}
    with local_stack(1, results=RESULTS / f"etcd-p99-{i}", extra_env=env) as stack:
        typha = stack.typhas[0]
        os.sched_setaffinity(typha.proc.pid, {args.cpu})
        out = RESULTS / f"etcd-p99-{i}"
        cmd = typha_load_command(
            stack,
            typha,
            clients=args.clients,
            rate=args.rate,
            duration=args.duration,
            full_clients=5,
            out=out,
            processes=2,
        )
        cmd += ["--pods", str(args.pods)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        result = json.loads((out.parent / f"{out.name}.json").read_text())
    lat = result["update_latency_ms"]
    updates_m = result["client_updates_per_s"] * args.duration / 1e6
    return {
        "run": i,
        "etcd_api": api,
        "load_before": round(load_before, 2),
        "writes_per_s": result["write_rate_achieved"],
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "max_ms": lat.get("max"),
        "typha_cpu_s_per_m_client_updates": round(result["typha_cpu_s"] / updates_m, 3)
        if updates_m
        else None,
        "reconnects": result["reconnects"],
        "convergence": result.get("convergence"),
        "latency_split": result.get("latency_split"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--pods", type=int, default=2000)
    p.add_argument("--cpu", type=int, default=0, help="the CPU Typha is pinned to")
    p.add_argument(
        "--etcd-api",
        default="",
        help="Typha's EtcdAPI: gateway, grpc, or a comma-separated list the runs cycle through "
        "(default: Typha's own default, grpc)",
    )
    args = p.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    runs = []
    for i in range(args.runs):
        row = one_run(args, i)
        runs.append(row)
        print(json.dumps(row), flush=True)
    out = RESULTS / f"etcd-p99-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
