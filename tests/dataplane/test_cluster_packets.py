"""Real packets through a three-node cluster programmed by NodeAgents fed from a real etcd
through a real (in-process) Typha.

Every verdict is checked with real TCP/UDP exchanges between namespaces, each denied case next
to an allowed one over the same path (so a "deny" cannot be a broken route). Then a pod's label
is changed in etcd and the time until new connection attempts get the new verdict is measured.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from felix_client.agent import NodeAgent
from felix_client.sync_client import SyncClient
from tests.dataplane.cluster import NODES, OUTSIDE_IP, PODS, Topology, resources, wep_resource
from tests.dataplane.nstools import NetnsPool, ns_out, routes
from tests.peers.etcd import EtcdServer
from typha.app import Typha
from typha.config import load_config
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources

pytestmark = pytest.mark.netns

ALLOW, DENY = True, False
POD_IP = {p.key: p.ip for p in PODS}
N2_HOST = NODES["n2"][0].split("/")[0]


def check(src: str, dst: str, proto: str, port: int, want: bool, why: str) -> dict[str, Any]:
    host = POD_IP.get(dst, dst)
    return {
        "src": src,
        "dst": dst,
        "proto": proto,
        "host": host,
        "port": port,
        "want": want,
        "why": why,
    }


# (source pod, destination pod or IP, protocol, port, expected verdict, reason)
MATRIX = [
    # allow-tcp-6379 (Calico NetworkPolicy): frontend → database on TCP 6379 only.
    check("myproject/frontend", "myproject/database", "tcp", 6379, ALLOW, "NP, direct n2→n1"),
    check("myproject/frontend3", "myproject/database", "tcp", 6379, ALLOW, "NP, VXLAN n3→n1"),
    check("myproject/frontend", "myproject/database", "tcp", 6380, DENY, "NP: other port"),
    check("myproject/flipper", "myproject/database", "tcp", 6379, DENY, "NP: not a frontend"),
    check("myproject/flipper", "np-demo/db", "tcp", 6379, ALLOW, "control: same path"),
    # GlobalNetworkPolicy in tier "security": UDP 9999 denied, the rest Passed on.
    check("named/client", "web/web", "udp", 9999, DENY, "GNP deny, VXLAN n1→n3"),
    check("named/client", "web/web", "udp", 9998, ALLOW, "GNP Pass → profile allow"),
    check("named/client", "web/web", "tcp", 80, ALLOW, "GNP Pass → profile allow"),
    check("myproject/frontend", "myproject/database", "udp", 9999, DENY, "GNP deny"),
    # The Kubernetes NetworkPolicy db-network-policy (ingress TCP 6379 from three peers).
    check("np-demo/fe", "np-demo/db", "tcp", 6379, ALLOW, "KNP podSelector role=frontend"),
    check("np-demo/fe", "np-demo/db", "tcp", 6380, DENY, "KNP: other port"),
    check("np-demo/nofe", "np-demo/db", "tcp", 6379, DENY, "KNP: role=backend"),
    check("np-demo/nofe", "np-demo/fe", "tcp", 80, ALLOW, "control: nofe can send"),
    check("myproject/frontend", "np-demo/db", "tcp", 6379, ALLOW, "KNP namespaceSelector"),
    check("ext/inblock", "np-demo/db", "tcp", 6379, ALLOW, "KNP ipBlock 172.17.0.0/16"),
    check("ext/except", "np-demo/db", "tcp", 6379, DENY, "KNP ipBlock except 172.17.1.0/24"),
    check("ext/except", "np-demo/fe", "tcp", 80, ALLOW, "control: except can send"),
    check("web/web", "np-demo/db", "tcp", 6379, DENY, "KNP: no peer matches (VXLAN)"),
    check("web/web", "myproject/database", "tcp", 80, DENY, "NP: database ingress"),
    check("web/web", "named/client", "tcp", 80, ALLOW, "control: VXLAN n3→n1"),
    # KNP egress: db may reach 10.0.0.0/24 on TCP 5978 only.
    check("np-demo/db", N2_HOST, "tcp", 5978, ALLOW, "KNP egress ipBlock + port"),
    check("np-demo/db", N2_HOST, "tcp", 5979, DENY, "KNP egress: other port"),
    check("np-demo/db", "named/client", "tcp", 80, DENY, "KNP egress: not 10.0.0.0/24"),
    # Named port: the cache's "kv" port is 7000.
    check("named/client", "named/cache", "tcp", 7000, ALLOW, "named port kv, VXLAN"),
    check("named/client", "named/cache", "tcp", 7001, DENY, "named port: other port"),
    # NAT outgoing (pool 10.65.0.0/16) towards the outside namespace.
    check("named/client", OUTSIDE_IP, "udp", 5000, ALLOW, "natOutgoing pool"),
    check("ext/inblock", OUTSIDE_IP, "udp", 5000, DENY, "no NAT: no way back"),
]


async def run_matrix(topo: Topology, checks: list[dict[str, Any]], timeout: float = 1.0) -> list:
    """Run ``checks`` grouped by source pod, all sources concurrently."""
    by_src: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        by_src.setdefault(c["src"], []).append(i)
    results: list[Any] = [None] * len(checks)

    async def one(src: str, idx: list[int]) -> None:
        prober = topo.pods[src].prober
        assert prober is not None
        req = [
            {
                "proto": checks[i]["proto"],
                "host": checks[i]["host"],
                "port": checks[i]["port"],
                "timeout": timeout,
            }
            for i in idx
        ]
        answer = await prober.request({"op": "batch", "checks": req})
        for i, r in zip(idx, answer["results"], strict=True):
            results[i] = r

    async with trio.open_nursery() as nursery:
        for src, idx in by_src.items():
            nursery.start_soon(one, src, idx)
    return results


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(0.05)


async def measure_flip(
    topo: Topology,
    etcd: EtcdClient,
    agent: NodeAgent,
    src: str,
    dst: str,
    port: int,
    want: bool,
    change: dict[str, Any],
) -> dict[str, float]:
    """Write ``change`` to etcd while ``src`` keeps opening new TCP connections to ``dst``;
    returns seconds from the acknowledged write to the first attempt with the new verdict
    (and to the apply on the destination's node)."""
    prober = topo.pods[src].prober
    assert prober is not None
    result: dict[str, Any] = {}

    async def watch() -> None:
        result.update(
            await prober.request(
                {
                    "op": "watch",
                    "proto": "tcp",
                    "host": POD_IP[dst],
                    "port": port,
                    "want": want,
                    "interval": 0.01,
                    "timeout": 0.25,
                    "deadline": 6,
                }
            )
        )

    applies_before = agent.applies
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.3)  # attempts with the old verdict first
        t_write = time.time()
        await apply_resources(etcd, [change])
        t_acked = time.time()
    assert result["found"], f"verdict {src}→{dst}:{port} never became {want}"
    await wait_for(lambda: agent.applies > applies_before, 5, "the apply")
    assert agent.last_apply_wall is not None
    return {
        "verdict_after_ack_s": result["t0"] - t_acked,
        "verdict_after_write_s": result["t0"] - t_write,
        "applied_after_ack_s": agent.last_apply_wall - t_acked,
        "etcd_write_s": t_acked - t_write,
    }


def format_row(c: dict[str, Any], r: dict[str, Any]) -> str:
    got = "allow" if r["ok"] else f"deny ({r['error']})"
    mark = "ok " if r["ok"] == c["want"] else "BAD"
    return (
        f"{mark} {c['src']:>20} → {c['dst']:<20} {c['proto']}/{c['port']:<5} "
        f"want {'allow' if c['want'] else 'deny':5} got {got:<18} {c['why']}"
    )


async def test_policy_verdicts_with_real_packets(
    netns: NetnsPool, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    topo = Topology(netns)
    topo.build()
    outside_log = tmp_path / "outside.log"
    outside_log.touch()
    cfg = load_config(
        environ={},
        overrides={
            "EtcdEndpoints": etcd_server.client_url,
            "ServerPort": -1,
            "ServerHost": "127.0.0.1",
            "LogFilePath": "none",
        },
    )
    async with EtcdClient([etcd_server.client_url]) as etcd:
        await apply_resources(etcd, resources())
        typha = Typha(cfg)
        agents = {
            name: NodeAgent(name, netns=ns, metrics_port=0, pending_retry_interval=0.2)
            for name, ns in topo.nodes.items()
        }
        try:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(typha.run)
                for name, agent in agents.items():
                    await nursery.start(agent.run)
                    client = SyncClient([f"127.0.0.1:{port}"], name, callbacks=agent)
                    nursery.start_soon(client.run)
                await topo.start_processes(str(outside_log))
                await wait_for(
                    lambda: (
                        all(a.in_sync and a.applies and not a.failing for a in agents.values())
                        and all(len(a.engine.model.weps) == len(PODS) for a in agents.values())
                    ),
                    20,
                    "all agents in sync",
                )
                for agent in agents.values():
                    await agent.wait_applied()
                await check_routes(topo)
                await check_matrix(topo, outside_log)
                await check_label_flips(topo, etcd, agents)
                for name, agent in agents.items():
                    assert agent.failures == 0, (name, agent.last_error)
                nursery.cancel_scope.cancel()
        finally:
            await topo.stop_processes()


async def check_routes(topo: Topology) -> None:
    """Direct routes between n1 and n2 (same subnet), VXLAN to and from n3."""
    n1, n2, n3 = (routes(topo.nodes[n]) for n in ("n1", "n2", "n3"))
    assert "10.65.2.0/26 via 10.0.0.2 dev eth0 proto 80 onlink" in n1
    assert "10.65.3.0/26 via 10.65.3.1 dev vxlan.calico onlink mtu 1450" in n1
    assert "10.65.1.0/26 via 10.65.1.1 dev vxlan.calico onlink mtu 1450" in n3
    assert "172.17.0.0/26 via 10.0.0.2 dev eth0 proto 80" in n1
    assert "blackhole 10.65.2.0/26 proto 80" in n2
    assert any(r.startswith("10.65.1.10 dev cali") for r in n1)
    neigh = ns_out(topo.nodes["n1"], "ip", "neigh", "show", "dev", "vxlan.calico")
    assert "10.65.3.1 lladdr 66:00:00:00:00:03 PERMANENT" in neigh


async def check_matrix(topo: Topology, outside_log: Path) -> None:
    # Warm up neighbour caches on every path so the first exchange is not racing ARP.
    await run_matrix(topo, [c for c in MATRIX if c["want"]], timeout=2.0)
    tx_before = {n: topo.vxlan_tx_packets(n) for n in NODES}
    direct = [c for c in MATRIX if c["why"] == "NP, direct n2→n1"]
    await run_matrix(topo, direct)
    tx_after_direct = {n: topo.vxlan_tx_packets(n) for n in NODES}
    results = await run_matrix(topo, MATRIX)
    tx_after = {n: topo.vxlan_tx_packets(n) for n in NODES}
    print("\nverdicts (real TCP/UDP between namespaces):")
    for c, r in zip(MATRIX, results, strict=True):
        print(format_row(c, r))
    bad = [format_row(c, r) for c, r in zip(MATRIX, results, strict=True) if r["ok"] != c["want"]]
    assert not bad, "\n".join(bad)
    for c, r in zip(MATRIX, results, strict=True):
        if not c["want"]:
            assert r["error"] == "timeout", (c, r)  # dropped, not refused or unroutable
    # The direct n2→n1 exchange used no tunnel; the n3 paths did.
    assert tx_after_direct["n2"] == tx_before["n2"]
    assert tx_after["n3"] > tx_after_direct["n3"] and tx_after["n1"] > tx_after_direct["n1"]
    # NAT outgoing: the outside host saw the node's address, never the pod's 10.65 address;
    # the unNATed pool's packet arrived with the pod address (and could not be answered).
    by_src = {(c["src"], c["host"], c["port"]): r for c, r in zip(MATRIX, results, strict=True)}
    assert by_src[("named/client", OUTSIDE_IP, 5000)]["reply"] == "10.0.0.1"
    seen = outside_log.read_text().split()
    assert "10.0.0.1" in seen and "172.17.0.10" in seen
    assert not any(ip.startswith("10.65.") for ip in seen)
    # The egress to n2's host network left n1 masqueraded too (10.0.0.0/24 is outside the pools).
    assert by_src[("np-demo/db", N2_HOST, 5978)]["reply"] == "10.0.0.1"


async def check_label_flips(topo: Topology, etcd: EtcdClient, agents: dict[str, NodeAgent]) -> None:
    flipper = next(p for p in PODS if p.key == "myproject/flipper")
    database = next(p for p in PODS if p.key == "myproject/database")
    n1 = agents["n1"]
    # Every flip is measured from flipper to database, watched through n1.
    flip = functools.partial(
        measure_flip, topo, etcd, n1, "myproject/flipper", "myproject/database"
    )
    figures = {}
    # The source's label: flipper becomes a frontend (an ipset member on n1).
    figures["source label → allow"] = await flip(
        6379, ALLOW, wep_resource(flipper, {"app": "frontend"})
    )
    figures["source label → deny"] = await flip(6379, DENY, wep_resource(flipper, {"app": "other"}))
    # The destination's label: the database leaves allow-tcp-6379's selector, so only the
    # profile (allow) is left (endpoint and policy chains on n1 change).
    figures["destination label → allow"] = await flip(
        6380, ALLOW, wep_resource(database, {"app": "retired"})
    )
    figures["destination label → deny"] = await flip(
        6380, DENY, wep_resource(database, {"app": "database"})
    )
    print("\nlabel change in etcd → new verdict for new TCP connections:")
    for name, f in figures.items():
        print(
            f"  {name:28} verdict after ack {f['verdict_after_ack_s'] * 1000:6.1f} ms"
            f" (after write call {f['verdict_after_write_s'] * 1000:6.1f} ms;"
            f" n1 applied {f['applied_after_ack_s'] * 1000:6.1f} ms after ack)"
        )
    for name, f in figures.items():
        assert f["verdict_after_write_s"] < 1.0, (name, f)
