"""A three-node cluster of network namespaces for real-packet policy tests.

Topology (every box is a namespace the test creates and deletes)::

                      fabric (router, ip_forward)
        brA 10.0.0.254/24        10.0.1.254/24        203.0.113.254/24
         /            \\                |                    |
    n1 10.0.0.1    n2 10.0.0.2      n3 10.0.1.3         outside 203.0.113.10
     | cali*         | cali*           | cali*
    pods            pods              pods

n1 and n2 share a subnet, n3 is behind the router. Pool ``10.65.0.0/16`` has
``vxlanMode: CrossSubnet`` and ``natOutgoing``, so n1↔n2 traffic is routed directly and anything
to or from n3 goes through ``vxlan.calico``; pool ``172.17.0.0/16`` (the seed's ipBlock range)
is unencapsulated and not NATed.

Each pod is wired as Calico's CNI plugin does it: a veth whose host end is the ``cali…``
interface (MAC ``ee:ee:ee:ee:ee:ee``) and whose pod end ``eth0`` holds the pod IP as a /32, with
a default route via ``169.254.1.1`` and a permanent ARP entry for it. Everything else on the node
— routes, proxy ARP, the VXLAN device, ipsets and iptables — is the node agent's job.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.dataplane.nstools import NetnsPool, nsrun, run, veth
from tests.seed_examples import allow_tcp_6379_spec, db_network_policy
from typha.resources import validate_resource, workload_endpoint_for_pod
from typha.sync.convert.k8s import (
    namespace_to_profile,
    network_policy_to_v3,
    service_account_to_profile,
)

NETPROBE = str(Path(__file__).with_name("netprobe.py"))
POD_MTU = "1450"  # what Calico's CNI configures for a VXLAN pool (1500 minus 50)

NODES = {
    # name: (address/prefix, gateway on the fabric, VTEP IP, VTEP MAC)
    "n1": ("10.0.0.1/24", "10.0.0.254", "10.65.1.1", "66:00:00:00:00:01"),
    "n2": ("10.0.0.2/24", "10.0.0.254", "10.65.2.1", "66:00:00:00:00:02"),
    "n3": ("10.0.1.3/24", "10.0.1.254", "10.65.3.1", "66:00:00:00:00:03"),
}
OUTSIDE_IP = "203.0.113.10"
BLOCKS = {
    "10.65.1.0/26": "n1",
    "10.65.2.0/26": "n2",
    "10.65.3.0/26": "n3",
    "172.17.0.0/26": "n2",
    "172.17.1.0/26": "n2",
}
NAMESPACE_LABELS = {
    "myproject": {"project": "myproject"},
    "np-demo": {},
    "ext": {},
    "web": {},
    "named": {},
}


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    node: str
    ip: str
    labels: dict[str, str]
    ports: tuple[dict[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


PODS = [
    PodSpec("myproject", "database", "n1", "10.65.1.10", {"app": "database"}),
    PodSpec("myproject", "frontend", "n2", "10.65.2.10", {"app": "frontend"}),
    PodSpec("myproject", "frontend3", "n3", "10.65.3.10", {"app": "frontend"}),
    PodSpec("myproject", "flipper", "n2", "10.65.2.11", {"app": "other"}),
    PodSpec("np-demo", "db", "n1", "10.65.1.20", {"role": "db"}),
    PodSpec("np-demo", "fe", "n2", "10.65.2.20", {"role": "frontend"}),
    PodSpec("np-demo", "nofe", "n2", "10.65.2.21", {"role": "backend"}),
    PodSpec("ext", "inblock", "n2", "172.17.0.10", {}),
    PodSpec("ext", "except", "n2", "172.17.1.10", {}),
    PodSpec("web", "web", "n3", "10.65.3.30", {"app": "web"}),
    PodSpec(
        "named",
        "cache",
        "n3",
        "10.65.3.20",
        {"app": "cache"},
        ({"name": "kv", "protocol": "TCP", "port": 7000},),
    ),
    PodSpec("named", "client", "n1", "10.65.1.30", {"app": "client"}),
]
POD_TCP = "80,6379,6380,7000,7001"
POD_UDP = "9998,9999"

# The seed's Kubernetes NetworkPolicy, verbatim apart from the namespace.
DB_NETWORK_POLICY = db_network_policy()


def _v3(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


def wep_resource(pod: PodSpec, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return workload_endpoint_for_pod(
        pod.node,
        pod.namespace,
        pod.name,
        pod.ip,
        pod.labels if labels is None else labels,
        ports=pod.ports,
    )


def resources() -> list[dict[str, Any]]:
    """Every v3 resource of the cluster, validated (defaults filled) like the API would."""
    out: list[dict[str, Any]] = [
        _v3("Tier", "default", {"order": 1_000_000}),
        _v3("Tier", "security", {"order": 100, "defaultAction": "Deny"}),
        _v3(
            "IPPool",
            "pool-vxlan",
            {"cidr": "10.65.0.0/16", "vxlanMode": "CrossSubnet", "natOutgoing": True},
        ),
        _v3("IPPool", "pool-ipblock", {"cidr": "172.17.0.0/16", "natOutgoing": False}),
    ]
    for name, (addr, _, vtep_ip, vtep_mac) in NODES.items():
        out.append(
            _v3(
                "Node",
                name,
                {
                    "bgp": {"ipv4Address": addr},
                    "ipv4VXLANTunnelAddr": vtep_ip,
                    "vxlanTunnelMACAddr": vtep_mac,
                },
            )
        )
    for cidr, node in BLOCKS.items():
        out.append(
            _v3(
                "IPAMBlock",
                cidr.replace(".", "-").replace("/", "-"),
                {"cidr": cidr, "affinity": f"host:{node}", "allocations": [], "unallocated": []},
            )
        )
    for ns, labels in NAMESPACE_LABELS.items():
        out.append(namespace_to_profile({"metadata": {"name": ns, "labels": labels}}))
        out.append(service_account_to_profile({"metadata": {"name": "default", "namespace": ns}}))
    out += [wep_resource(p) for p in PODS]
    # The seed's Calico policy: TCP 6379 from frontends to the database.
    out.append(
        _v3(
            "NetworkPolicy",
            "allow-tcp-6379",
            allow_tcp_6379_spec(),
            "myproject",
        )
    )
    # A GlobalNetworkPolicy in its own tier: UDP 9999 is denied to every pod, everything else
    # is passed on to the default tier.
    out.append(
        _v3(
            "GlobalNetworkPolicy",
            "security.guard",
            {
                "tier": "security",
                "order": 10,
                "selector": "all()",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Deny", "protocol": "UDP", "destination": {"ports": [9999]}},
                    {"action": "Pass"},
                ],
            },
        )
    )
    # A named port: the cache's "kv" port, whatever its number.
    out.append(
        _v3(
            "NetworkPolicy",
            "allow-kv",
            {
                "selector": "app == 'cache'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["kv"]}}
                ],
            },
            "named",
        )
    )
    # The seed's Kubernetes NetworkPolicy through the Kubernetes datastore's own conversion.
    out.append(network_policy_to_v3(DB_NETWORK_POLICY))
    return [validate_resource(r) for r in out]


# --- processes in namespaces ---------------------------------------------------------------------


class NsProcess:
    """A netprobe program running in a namespace (killed by pid in ``stop``)."""

    def __init__(self, proc: trio.Process, label: str) -> None:
        self.proc = proc
        self.label = label
        self._buf = b""
        self._lock = trio.Lock()

    @classmethod
    async def start(cls, ns: str, label: str, *args: str) -> NsProcess:
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", ns, sys.executable, NETPROBE, *args],
            stdin=-1,
            stdout=-1,
        )
        return cls(proc, label)

    async def readline(self) -> bytes:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some(1 << 16)
            if not data:
                raise RuntimeError(f"{self.label}: process exited ({self.proc.poll()})")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    async def request(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        async with self._lock:
            await self.proc.stdin.send_all((json.dumps(req) + "\n").encode())
            return json.loads(await self.readline())

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with trio.move_on_after(5):
            await self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                await stream.aclose()


@dataclass
class Pod:
    spec: PodSpec
    ns: str
    iface: str
    server: NsProcess | None = None
    prober: NsProcess | None = None


@dataclass
class Topology:
    pool: NetnsPool
    fabric: str = ""
    outside: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    processes: list[NsProcess] = field(default_factory=list)

    def build(self) -> None:
        """Create the namespaces, links and addresses (the cluster's "hardware" and CNI)."""
        p = self.pool
        self.fabric = p.create("fab")
        nsrun(self.fabric, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        run(["ip", "-n", self.fabric, "link", "add", "brA", "type", "bridge"])
        run(["ip", "-n", self.fabric, "addr", "add", "10.0.0.254/24", "dev", "brA"])
        run(["ip", "-n", self.fabric, "link", "set", "brA", "up"])
        for name, (addr, gateway, _, _) in NODES.items():
            ns = self.nodes[name] = p.create(name)
            veth(ns, "eth0", self.fabric, f"to-{name}")
            run(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])
            run(["ip", "-n", ns, "route", "add", "default", "via", gateway])
            if gateway == "10.0.0.254":
                run(["ip", "-n", self.fabric, "link", "set", f"to-{name}", "master", "brA"])
            else:
                run(["ip", "-n", self.fabric, "addr", "add", f"{gateway}/24", "dev", f"to-{name}"])
        self.outside = p.create("out")
        veth(self.outside, "eth0", self.fabric, "to-out")
        run(["ip", "-n", self.outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0"])
        run(["ip", "-n", self.outside, "route", "add", "default", "via", "203.0.113.254"])
        run(["ip", "-n", self.fabric, "addr", "add", "203.0.113.254/24", "dev", "to-out"])
        for spec in PODS:
            self.add_pod(spec)

    def add_pod(self, spec: PodSpec) -> Pod:
        """What the CNI plugin does for a new pod."""
        iface = wep_resource(spec)["spec"]["interfaceName"]
        ns = self.pool.create(f"p{len(self.pods)}")
        node = self.nodes[spec.node]
        veth(node, iface, ns, "eth0", mac_a="ee:ee:ee:ee:ee:ee")
        for cmd in (
            ["link", "set", "eth0", "mtu", POD_MTU],
            ["addr", "add", f"{spec.ip}/32", "dev", "eth0"],
            ["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"],
            ["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"],
            [
                "neigh",
                "add",
                "169.254.1.1",
                "lladdr",
                "ee:ee:ee:ee:ee:ee",
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        ):
            run(["ip", "-n", ns, *cmd])
        pod = self.pods[spec.key] = Pod(spec, ns, iface)
        return pod

    async def start_processes(self, outside_log: str) -> None:
        """A server in every pod (and on n2's host network and the outside host), a prober in
        every pod."""
        waits = []
        for pod in self.pods.values():
            pod.server = await NsProcess.start(
                pod.ns, f"server {pod.spec.key}", "server", "--tcp", POD_TCP, "--udp", POD_UDP
            )
            pod.prober = await NsProcess.start(pod.ns, f"prober {pod.spec.key}", "prober")
            self.processes += [pod.server, pod.prober]
            waits.append(pod.server)
        host_server = await NsProcess.start(
            self.nodes["n2"], "server n2 host", "server", "--tcp", "5978,5979"
        )
        outside = await NsProcess.start(
            self.outside, "server outside", "server", "--udp", "5000", "--log", outside_log
        )
        self.processes += [host_server, outside]
        waits += [host_server, outside]
        for proc in waits:
            with trio.fail_after(10):
                assert await proc.readline() == b"ready", proc.label

    async def stop_processes(self) -> None:
        with trio.CancelScope(shield=True):
            for proc in self.processes:
                await proc.stop()
        self.processes.clear()

    def vxlan_tx_packets(self, node: str) -> int:
        out = nsrun(self.nodes[node], "cat", "/sys/class/net/vxlan.calico/statistics/tx_packets")
        return int(out.stdout.strip())
