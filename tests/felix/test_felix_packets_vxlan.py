"""Real packets between pods on two nodes over VXLAN, each node programmed by its own real
calico-felix from typha-py (and from Calico Typha, and by our felix_client, to the same verdicts):
the cross-node case the felix_client packet suite runs (tests/dataplane/test_cluster_packets.py).

The data are config/examples made a VXLAN cluster (`vxlan_cluster`): the pool encapsulates
with vxlanMode CrossSubnet (no IPIP), and each Node carries its VXLAN tunnel address (the first
address of its block) and tunnel MAC — but node3, whose MAC is the one Felix derives from its
name.  node1 (10.0.0.11/24) and node3 (10.0.1.13/24) are in different subnets, routed by the
control namespace, so their pods' traffic goes through vxlan.calico; node2 (10.0.0.12/24, not
started) shares node1's subnet, so node1's route to node2's block is direct.  What Felix needs
from the datastore to program a remote VTEP is in docs/peers.md.

Pods: nginx and the frontend on node1, nginx on node3.  nginx-from-frontend allows TCP 80 from
the frontend to every nginx and nothing else; the frontend has no policy (its profile allows).
"""

from __future__ import annotations

import contextlib
import copy
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.nstools import ns_out, routes
from tests.felix import datasets
from tests.felix.controls import NETPROBE
from tests.felix.lab import FelixLab
from tests.felix.netns import entered

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 240  # two Felixes (or two felix_clients) on a loaded machine

NODE3 = "node3"
NODE3_ADDR, NODE3_GATEWAY = "10.0.1.13/24", "10.0.1.1"
# node -> (VXLAN tunnel address: the first address of its block, tunnel MAC)
VTEPS = {
    "node1": ("192.168.162.128", "66:c0:a8:a2:80:01"),
    "node2": ("192.168.91.0", "66:c0:a8:5b:00:02"),
    # No vxlanTunnelMACAddr in node3's Node: the MAC Felix derives from the name "node3"
    # (0x66, then SHA-1's first five bytes), on node3's device and in node1's entries.
    "node3": ("192.168.88.0", "66:a4:6f:e0:c4:da"),
}
DERIVED_MAC = {"node3"}
NGINX1, FRONTEND1, NGINX3 = "192.168.162.146", "192.168.162.147", "192.168.88.23"
IFACE = {NGINX1: "calia53571dc704", FRONTEND1: "cali8b75868d7bb", NGINX3: "cali194b1c54dff"}
PROGRAMS = ["felix/typha-py", "felix/calico-typha", "felix_client/typha-py"]

ALLOW, DENY = True, False
# (source pod, destination pod, TCP port, verdict, why); each deny next to an allow over the
# same path (same nodes, same tunnel).
MATRIX = [
    (FRONTEND1, NGINX3, 80, ALLOW, "nginx-from-frontend, VXLAN node1 -> node3"),
    (FRONTEND1, NGINX3, 81, DENY, "same pods, other port: end of tier"),
    (NGINX1, NGINX3, 80, DENY, "same path, source not a frontend"),
    (NGINX3, FRONTEND1, 80, ALLOW, "no policy on the frontend: profile, VXLAN node3 -> node1"),
    (NGINX3, NGINX1, 80, DENY, "same path back, source not a frontend"),
]


def vxlan_cluster() -> list[dict[str, Any]]:
    """config/examples (plus nginx-from-frontend) as a VXLAN cluster: pool vxlanMode
    CrossSubnet, IPIP off, each Node's tunnel address and (but node3's) MAC, the blocks' first
    address held as the VXLAN (not IPIP) tunnel address."""
    out = []
    for r in copy.deepcopy(datasets.examples()):
        kind, name, spec = r["kind"], r["metadata"]["name"], r["spec"]
        if kind == "FelixConfiguration":
            spec["ipipEnabled"] = False
        elif kind == "IPPool":
            spec.update(ipipMode="Never", vxlanMode="CrossSubnet")
        elif kind == "Node":
            spec["bgp"].pop("ipv4IPIPTunnelAddr", None)
            spec["ipv4VXLANTunnelAddr"] = VTEPS[name][0]
            if name not in DERIVED_MAC:
                spec["vxlanTunnelMACAddr"] = VTEPS[name][1]
        elif kind == "IPAMBlock":
            node = spec["affinity"].removeprefix("host:")
            spec["attributes"][0] = {
                "handle_id": f"vxlan-tunnel-addr-{node}",
                "secondary": {"node": node, "type": "vxlanTunnelAddress"},
            }
        out.append(r)
    return out


def relabelled(resources: list[dict[str, Any]], ip: str, app: str) -> dict[str, Any]:
    wep = next(r for r in resources if r["spec"].get("ipNetworks") == [f"{ip}/32"])
    wep = copy.deepcopy(wep)
    wep["metadata"]["labels"]["app"] = app
    return wep


def verdict(ns: str, host: str, port: int, want: bool) -> str:
    """``exchange``, tried up to three times where an answer is expected: one SYN lost while
    a Felix rewrites a node's tables (seen once in a full-suite run, with Calico Typha, after
    the first cross-node answer) is not a deny; a deny must time out on its single 0.5 s
    attempt, and a wrong answer to it is never retried away."""
    got = exchange(ns, host, port)
    for _ in range(2):
        if not want or got != "timeout":
            break
        got = exchange(ns, host, port)
    return got


def exchange(ns: str, host: str, port: int, timeout: float = 0.5) -> str:
    """From namespace `ns`, a TCP exchange with netprobe's server: the address it saw us as, or
    how it failed ("timeout" is a drop)."""
    with entered(ns):
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                return conn.recv(64).decode(errors="replace").strip() or "closed"
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return type(e).__name__


def tunnel_packets(node: str, direction: str) -> int:
    return int(ns_out(node, "cat", f"/sys/class/net/vxlan.calico/statistics/{direction}_packets"))


@contextlib.contextmanager
def servers(namespaces: list[str]) -> Iterator[None]:
    procs = []
    try:
        for ns in namespaces:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(NETPROBE), "server",
                 "--tcp", "80,81"],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def felix_client(lab: FelixLab, node_name: str, typha: str, log: Path) -> subprocess.Popen[bytes]:
    """Our node client programming `node_name`'s namespace from `typha` until killed (its
    output to `log`)."""
    ns = lab.node_ns(node_name)
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "felix_client.cli", "run",
             "--node", node_name, "--typha", typha, "--netns", ns,
             "--metrics-port", "0", "--status-interval", "0"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, f"no {what} within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def tunnel_route(node: str, remote_block: str, remote_vtep: str) -> bool:
    """Whether `node` routes `remote_block` via the remote VTEP's address on vxlan.calico."""
    want = f"{remote_block} via {remote_vtep} dev vxlan.calico"
    return any(r.startswith(want) for r in routes(node))


def assert_vtep(node: str, own: str, remote: str, remote_parent: str) -> None:
    """vxlan.calico carries `own` VTEP's MAC; the remote VTEP has its permanent neighbour entry
    (tunnel address -> MAC) and its forwarding entry (MAC -> the remote node's address)."""
    link = ns_out(node, "ip", "-d", "link", "show", "vxlan.calico")
    assert f"link/ether {VTEPS[own][1]}" in link and "vxlan id 4096" in link, link
    neigh = ns_out(node, "ip", "neigh", "show", "dev", "vxlan.calico")
    assert f"{VTEPS[remote][0]} lladdr {VTEPS[remote][1]} PERMANENT" in neigh, neigh
    fdb = ns_out(node, "bridge", "fdb", "show", "dev", "vxlan.calico")
    assert f"{VTEPS[remote][1]} dst {remote_parent}" in fdb, fdb


@pytest.mark.parametrize("program", PROGRAMS)
def test_pods_across_nodes_over_vxlan(felix_lab: FelixLab, program: str, tmp_path: Path) -> None:
    """The same verdicts whichever program, from whichever Typha, programmed the two nodes."""
    lab = felix_lab
    resources = vxlan_cluster()
    node3 = lab.add_node(NODE3, NODE3_ADDR, NODE3_GATEWAY)
    pods = lab.add_workload_namespaces(resources)
    pods.update(lab.add_workload_namespaces(resources, NODE3))
    pod_ns = {ip: pods[iface] for ip, iface in IFACE.items()}
    etcd = lab.etcd()
    lab.load(etcd, resources)
    typha = lab.calico_typha(etcd) if program.endswith("calico-typha") else lab.typha_py(etcd)
    clients: list[subprocess.Popen[bytes]] = []
    with servers([pod_ns[NGINX1], pod_ns[FRONTEND1], pod_ns[NGINX3]]):
        try:
            t_start = time.monotonic()
            if program.startswith("felix/"):
                felixes = [lab.felix(etcd, typha), lab.felix(etcd, typha, NODE3)]
            else:
                felixes = []
                clients = [
                    felix_client(lab, n, typha.address, tmp_path / f"felix_client-{n}.log")
                    for n in ("node1", NODE3)
                ]
            # Positive controls: both nodes' tunnel routes (node2 in node1's subnet: direct).
            wait_for(lambda: tunnel_route(lab.node, "192.168.88.0/26", VTEPS[NODE3][0]), 30,
                     "route to node3's block via vxlan.calico on node1")  # fmt: skip
            wait_for(lambda: tunnel_route(node3, "192.168.162.128/26", VTEPS["node1"][0]), 30,
                     "route to node1's block via vxlan.calico on node3")  # fmt: skip
            t_programmed = time.monotonic()
            assert any(r.startswith("192.168.91.0/26 via 10.0.0.12 dev eth0") for r in
                       routes(lab.node)), routes(lab.node)  # fmt: skip
            for felix in felixes:
                felix.wait_until(lambda f=felix: f.first_update_seconds() is not None, 10,
                                 "first-update line")  # fmt: skip
            # The first cross-node exchange after both nodes are programmed.
            first = wait_for(
                lambda: exchange(pod_ns[FRONTEND1], NGINX3, 80, timeout=0.2) == FRONTEND1,
                10, "first cross-node answer",
            )  # fmt: skip
            assert_vtep(lab.node, "node1", NODE3, NODE3_ADDR.split("/")[0])
            assert_vtep(node3, NODE3, "node1", "10.0.0.11")
            tx1, rx3 = tunnel_packets(lab.node, "tx"), tunnel_packets(node3, "rx")
            verdicts = [verdict(pod_ns[src], dst, port, want) for src, dst, port, want, _ in MATRIX]
            bad = [
                f"{src} -> {dst}:{port} want {'allow' if want else 'deny'} got {got} ({why})"
                for (src, dst, port, want, why), got in zip(MATRIX, verdicts, strict=True)
                if got != (src if want else "timeout")
            ]
            assert not bad, "\n".join(bad)
            # The exchanges went through the tunnel, denied ones included: node3 received
            # node1's packets and dropped the denied ones by policy, not for want of a path.
            assert tunnel_packets(lab.node, "tx") > tx1 and tunnel_packets(node3, "rx") > rx3
            # The frontend relabelled: node3's policy stops allowing it (polled up to 10 s).
            t0 = time.monotonic()
            lab.load(etcd, [relabelled(resources, FRONTEND1, "not-frontend")])
            wait_for(lambda: exchange(pod_ns[FRONTEND1], NGINX3, 80) == "timeout", 10,
                     "denied verdict after the relabel")  # fmt: skip
            flip = time.monotonic() - t0
            # Control: the path still carries the allowed direction.
            assert exchange(pod_ns[NGINX3], FRONTEND1, 80) == NGINX3
            # node1's route to node3's block needs node3's VTEP, i.e. its tunnel address in its
            # Node resource: without it the route goes and the answers with it; back, they return.
            node3_res = next(r for r in resources if r["metadata"]["name"] == NODE3)
            untunnelled = copy.deepcopy(node3_res)
            del untunnelled["spec"]["ipv4VXLANTunnelAddr"]
            lab.load(etcd, [untunnelled])
            wait_for(lambda: not tunnel_route(lab.node, "192.168.88.0/26", VTEPS[NODE3][0]), 10,
                     "route to node3's block withdrawn")  # fmt: skip
            assert exchange(pod_ns[NGINX3], FRONTEND1, 80) == "timeout"
            t0 = time.monotonic()
            lab.load(etcd, [node3_res])
            wait_for(lambda: tunnel_route(lab.node, "192.168.88.0/26", VTEPS[NODE3][0]), 10,
                     "route to node3's block back")  # fmt: skip
            wait_for(lambda: exchange(pod_ns[NGINX3], FRONTEND1, 80, timeout=0.2) == NGINX3, 10,
                     "answers across nodes again")  # fmt: skip
            restored = time.monotonic() - t0
            firsts = [f.first_update_seconds() for f in felixes]
            print(
                f"\n{program}: start -> both nodes' tunnel routes {t_programmed - t_start:.2f}s;"
                f" -> first cross-node answer +{first:.3f}s; relabel -> denied across nodes"
                f" {flip:.3f}s; VTEP restored -> answered {restored:.3f}s;"
                f" Felix first update (secsSinceStart) {firsts}"
            )
        finally:
            for client in clients:
                client.kill()
                client.wait()
    for client in clients:
        assert client.returncode == -9, client.returncode  # ran until killed, no crash
