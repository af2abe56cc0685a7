"""The figures in docs/dataplane.md, measured (and loosely bounded) here.

* A 20,000-endpoint, 500-policy snapshot from a real in-process Typha to the dry-run files.
* Label changes on a node with 200 local endpoints (and their veths) in a namespace, applied by
  the kernel backend: the incremental apply time Felix reports as
  ``felix_int_dataplane_apply_time_seconds``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from felix_client.agent import NodeAgent
from felix_client.calc.synthetic import build_cluster
from felix_client.dataplane.dryrun import FILES
from felix_client.sync_client import SyncClient
from tests.dataplane.nstools import NetnsPool, nsrun, routes, veth
from typha.app import Typha
from typha.config import load_config
from typha.protocol import SyncStatus
from typha.sync.memory import MemoryDatastore

LOCAL = "node-0"


def cluster() -> list[tuple[str, Any]]:
    # 100 nodes → 200 endpoints on node-0.
    return build_cluster(n_endpoints=20_000, n_policies=500, n_nodes=100, local_node=LOCAL)


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms, max {ms[-1]:.1f} ms"


async def test_snapshot_to_dry_run_files(tmp_path: Path) -> None:
    kvs = cluster()
    typha = Typha(
        load_config(
            environ={},
            overrides={"ServerPort": -1, "ServerHost": "127.0.0.1", "LogFilePath": "none"},
        ),
        MemoryDatastore(dict(kvs)),
    )
    agent = NodeAgent(LOCAL, dry_run_dir=tmp_path, metrics_port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(typha.run)
        await nursery.start(agent.run)
        # compression=False: Typha's shared zstd compressor is not thread-safe (the snapshot is
        # encoded in a worker thread while the fan-out compresses breadcrumbs), which fails
        # under exactly this load; reported to the lead.
        client = SyncClient([f"127.0.0.1:{port}"], LOCAL, callbacks=agent, compression=False)
        first_kvs: list[float] = []
        client.on_kvs = lambda msg: first_kvs.append(time.perf_counter()) if not first_kvs else None
        t_start = time.perf_counter()
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        t_in_sync = time.perf_counter()
        await agent.wait_applied(timeout=120)
        t_files = time.perf_counter()
        nursery.cancel_scope.cancel()
    sizes = {name: (tmp_path / name).stat().st_size for name in FILES}
    print(
        f"\n20k endpoints / 500 policies snapshot ({len(kvs)} KVs) via Typha → dry-run files:"
        f"\n  connect → first KVs {(first_kvs[0] - t_start) * 1000:.0f} ms,"
        f" → in sync {(t_in_sync - t_start) * 1000:.0f} ms,"
        f" → files written {(t_files - t_start) * 1000:.0f} ms"
        f"\n  from first KVs received to files written: {(t_files - first_kvs[0]) * 1000:.0f} ms"
        f" (calculation {agent.last_calc_seconds * 1000:.0f} ms,"
        f" render+write {agent.last_apply_seconds * 1000:.0f} ms)"
        f"\n  files: {sizes}"
    )
    assert agent.state is not None
    assert sum(1 for c in agent.state.filter_chains if c.startswith("cali-tw-")) == 200
    assert t_files - first_kvs[0] < 60


def make_veths(node: str, ifaces: list[str]) -> None:
    """One ``ip -batch`` for all the workload veths (peer ends stay in the node namespace:
    only the cali side matters for routes and chains)."""
    lines = []
    for i, iface in enumerate(ifaces):
        lines.append(f"link add {iface} type veth peer name wl{i}")
        lines.append(f"link set {iface} up")
        lines.append(f"link set wl{i} up")
    nsrun(node, "ip", "-batch", "-", input="\n".join(lines) + "\n")


@pytest.mark.netns
async def test_label_change_apply_time_with_200_local_endpoints(netns: NetnsPool) -> None:
    kvs = cluster()
    local = [(k, v) for k, v in kvs if k.startswith(f"/calico/v1/host/{LOCAL}/workload/")]
    mine = f"/calico/v1/host/{LOCAL}/"
    remote = [(k, v) for k, v in kvs if "/workload/" in k and not k.startswith(mine)]
    assert len(local) == 200
    node = netns.create("node0")
    peer = netns.create("peer")
    veth(node, "eth0", peer, "uplink")
    # node-0's address: the other 99 nodes are on this subnet, so their blocks are routed
    # directly (the pool is IPIP CrossSubnet) and every route is programmable.
    nsrun(node, "ip", "addr", "add", "192.168.0.10/24", "dev", "eth0")
    make_veths(node, [v["name"] for _, v in local])
    agent = NodeAgent(LOCAL, netns=node, metrics_port=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        agent.on_updates(kvs)
        agent.on_status(SyncStatus.IN_SYNC)
        t0 = time.perf_counter()
        await agent.wait_applied(timeout=120)
        initial = time.perf_counter() - t0
        initial_calc, initial_apply = agent.last_calc_seconds, agent.last_apply_seconds
        assert agent.failures == 0
        assert sum(1 for r in routes(node) if " dev cali" in r) == 200
        assert not agent.dataplane.pending_work()
        stats = agent.dataplane.stats

        chain_applies: list[float] = []
        chain_calcs: list[float] = []
        set_applies: list[float] = []
        end_to_end: list[float] = []
        i = 0
        while len(chain_applies) < 20 and i < 400:
            # Move a local pod to another app: the policies that select it change.
            key, value = local[i % len(local)]
            app = f"app{(int(value['labels']['app'][3:]) + 1 + i) % 40}"
            value = {**value, "labels": {**value["labels"], "app": app}}
            local[i % len(local)] = (key, value)
            restores = stats.iptables_restore_calls
            t = time.perf_counter()
            agent.on_updates([(key, value)])
            await agent.wait_applied()
            if stats.iptables_restore_calls > restores:
                chain_applies.append(agent.last_apply_seconds)
                chain_calcs.append(agent.last_calc_seconds)
                end_to_end.append(time.perf_counter() - t)
            i += 1
        j = 0
        while len(set_applies) < 20 and j < 2000:
            # A remote pod changes app: ipset members move on this node when the old or new
            # app is the source of a policy active here.
            key, value = remote[(j * 7919) % len(remote)]
            value = {**value, "labels": {**value["labels"], "app": f"app{j % 40}"}}
            calls = stats.ipset_calls
            agent.on_updates([(key, value)])
            await agent.wait_applied()
            if stats.ipset_calls > calls:
                set_applies.append(agent.last_apply_seconds)
            j += 1
        nursery.cancel_scope.cancel()
    assert len(chain_applies) >= 10
    print(
        "\nkernel backend, 200 local endpoints, 500 policies, 20k endpoints cluster-wide:"
        f"\n  snapshot → initial resync done: {initial * 1000:.0f} ms (calculation"
        f" {initial_calc * 1000:.0f} ms, resync of all chains, sets and"
        f" {len(agent.state.routes)} routes {initial_apply * 1000:.0f} ms)"  # type: ignore[union-attr]
        f"\n  local label change → chain rewrite: apply {summary(chain_applies)}"
        f"\n      calculation {summary(chain_calcs)}; update → applied {summary(end_to_end)}"
        f"\n  remote label change → ipset member delta: apply {summary(set_applies)}"
    )
    assert statistics.median(chain_applies) < 0.5
    assert len(set_applies) >= 10 and statistics.median(set_applies) < 0.5
