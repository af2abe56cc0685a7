"""Node client figures for docs/benchmarks.md (`python -m load.bench_dataplane`).

1. A 20,000-endpoint, 500-policy snapshot from a real in-process Typha to the dry-run files
   written (target ≤ 1 s from the snapshot's receipt).
2. On a node with 200 local endpoints (and their veths, in a network namespace made here), the
   kernel apply time of one label change: a local one (rewrites the endpoint's chains) and a
   remote one (moves ipset members) — `felix_int_dataplane_apply_time_seconds`.

Writes .load-results/bench_dataplane.json. Needs root for the namespace part (skipped
otherwise, and said so in the JSON).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from felix_client.agent import NodeAgent
from felix_client.calc.synthetic import build_cluster
from felix_client.dataplane.dryrun import FILES
from felix_client.sync_client import SyncClient
from load.harness import write_result
from typha.app import Typha
from typha.config import load_config
from typha.protocol import SyncStatus
from typha.sync.memory import MemoryDatastore

LOCAL = "node-0"


def cluster(n_endpoints: int, n_policies: int) -> list[tuple[str, Any]]:
    # 100 nodes → 200 endpoints on node-0 for 20,000 endpoints.
    return build_cluster(
        n_endpoints=n_endpoints, n_policies=n_policies, n_nodes=100, local_node=LOCAL
    )


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.9))], 2),
        "max_ms": round(ms[-1], 2),
    }


async def snapshot_to_files(kvs: list[tuple[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        cfg = load_config(
            environ={},
            overrides={"ServerPort": -1, "ServerHost": "127.0.0.1", "LogFilePath": "none"},
        )
        typha = Typha(cfg, MemoryDatastore(dict(kvs)))
        agent = NodeAgent(LOCAL, dry_run_dir=out_dir, metrics_port=0)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(typha.run)
            await nursery.start(agent.run)
            client = SyncClient([f"127.0.0.1:{port}"], LOCAL, callbacks=agent)
            first: list[float] = []
            client.on_kvs = lambda _msg: first.append(time.perf_counter()) if not first else None
            t0 = time.perf_counter()
            nursery.start_soon(client.run)
            await client.in_sync.wait()
            t_received = time.perf_counter()
            await agent.wait_applied(timeout=300)
            t_files = time.perf_counter()
            nursery.cancel_scope.cancel()
        return {
            "kvs": len(kvs),
            "connect_to_first_kvs_ms": round((first[0] - t0) * 1000, 1),
            "snapshot_received_ms": round((t_received - t0) * 1000, 1),
            "received_to_files_written_ms": round((t_files - t_received) * 1000, 1),
            "first_kvs_to_files_written_ms": round((t_files - first[0]) * 1000, 1),
            "calculation_ms": round(agent.last_calc_seconds * 1000, 1),
            "render_and_write_ms": round(agent.last_apply_seconds * 1000, 1),
            "file_bytes": {name: (out_dir / name).stat().st_size for name in FILES},
            "local_endpoint_chains": sum(
                1
                for c in (agent.state.filter_chains if agent.state else {})
                if c.startswith("cali-tw-")
            ),
        }


async def label_changes_in_netns(kvs: list[tuple[str, Any]]) -> dict[str, Any]:
    from tests.dataplane.nstools import NetnsPool, can_use_netns, nsrun, veth

    why = can_use_netns()
    if why:
        return {"skipped": why}
    local = [(k, v) for k, v in kvs if k.startswith(f"/calico/v1/host/{LOCAL}/workload/")]
    mine = f"/calico/v1/host/{LOCAL}/"
    remote = [(k, v) for k, v in kvs if "/workload/" in k and not k.startswith(mine)]
    pool = NetnsPool()
    try:
        node = pool.create("node0")
        peer = pool.create("peer")
        veth(node, "eth0", peer, "uplink")
        nsrun(node, "ip", "addr", "add", "192.168.0.10/24", "dev", "eth0")
        lines = []
        for i, (_, v) in enumerate(local):
            lines += [
                f"link add {v['name']} type veth peer name wl{i}",
                f"link set {v['name']} up",
                f"link set wl{i} up",
            ]
        nsrun(node, "ip", "-batch", "-", input="\n".join(lines) + "\n")
        agent = NodeAgent(LOCAL, netns=node, metrics_port=0)
        chain_applies: list[float] = []
        set_applies: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            agent.on_updates(kvs)
            agent.on_status(SyncStatus.IN_SYNC)
            t0 = time.perf_counter()
            await agent.wait_applied(timeout=300)
            initial = time.perf_counter() - t0
            stats = agent.dataplane.stats
            i = 0
            while len(chain_applies) < 30 and i < 600:
                key, value = local[i % len(local)]
                app = f"app{(int(value['labels']['app'][3:]) + 1 + i) % 40}"
                value = {**value, "labels": {**value["labels"], "app": app}}
                local[i % len(local)] = (key, value)
                before = stats.iptables_restore_calls
                agent.on_updates([(key, value)])
                await agent.wait_applied()
                if stats.iptables_restore_calls > before:
                    chain_applies.append(agent.last_apply_seconds)
                i += 1
            j = 0
            while len(set_applies) < 30 and j < 3000:
                key, value = remote[(j * 7919) % len(remote)]
                value = {**value, "labels": {**value["labels"], "app": f"app{j % 40}"}}
                before = stats.ipset_calls
                agent.on_updates([(key, value)])
                await agent.wait_applied()
                if stats.ipset_calls > before:
                    set_applies.append(agent.last_apply_seconds)
                j += 1
            nursery.cancel_scope.cancel()
        return {
            "local_endpoints": len(local),
            "initial_resync_ms": round(initial * 1000, 1),
            "local_label_change_apply": summary(chain_applies),
            "remote_label_change_apply": summary(set_applies),
        }
    finally:
        pool.cleanup()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    kvs = cluster(args.endpoints, args.policies)
    return {
        "cluster": {"endpoints": args.endpoints, "policies": args.policies, "kvs": len(kvs)},
        "snapshot_to_dry_run": await snapshot_to_files(kvs),
        "kernel_label_change": await label_changes_in_netns(kvs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=20_000)
    parser.add_argument("--policies", type=int, default=500)
    args = parser.parse_args(argv)
    from typha import logs

    logs.configure_logging(screen="WARNING")
    result = trio.run(bench, args)
    write_result("bench_dataplane", result)
    logs.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
