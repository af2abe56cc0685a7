"""A node and its control plane in two namespaces, for running real Felix against either Typha.

Layout (nothing in the root namespace gets an address):

    <prefix>ctl   eth0 10.0.0.1/24   etcd, kube-apiserver (Kubernetes datastore), Calico Typha,
                                     typha-py
        | veth
    <prefix>node  eth0 10.0.0.11/24  calico-felix as node1 (config/examples' node1 address),
                  plus one veth per local workload endpoint, named by its interfaceName

`add_node` adds more nodes, each in its own subnet behind the control namespace, which then
routes between the subnets (e.g. the examples' node3 at 10.0.1.13/24 via 10.0.1.1, a second
Felix, for pod traffic across nodes over VXLAN).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable
from typing import Any

from tests.calico.datasets import load_etcd, load_kubernetes
from tests.dataplane.nstools import run, veth
from tests.felix import snapshot
from tests.felix.netns import FelixNetns, entered
from tests.peers.calico_typha import calico_crd_dir
from tests.peers.felix import Felix, NsCalicoTypha, NsEtcd, NsKubeApiServer, NsTyphaPy
from tests.peers.process import PeerProcess

Store = NsEtcd | NsKubeApiServer
"""A datastore: etcd itself, or a kube-apiserver (on its own etcd) with Calico's CRDs."""

CTL_IP = "10.0.0.1"
NODE_IP = "10.0.0.11"
NODE_NAME = "node1"


class FelixLab:
    def __init__(self, *, felix_binary: str, typha_binary: str):
        self.felix_binary = felix_binary
        self.typha_binary = typha_binary
        self.namespaces = FelixNetns()
        self.ctl = ""
        self.node = ""
        self._peers: list[PeerProcess] = []
        self._nodes = 0
        self.etcd_peer: NsEtcd | None = None
        self.typha_peer: NsCalicoTypha | NsTyphaPy | None = None
        # Extra nodes: node name -> namespace, and each node namespace's default gateway.
        self.nodes: dict[str, str] = {}
        self._gateways: dict[str, str] = {}

    def setup(self) -> None:
        self.ctl = self.namespaces.create("ctl")
        self._new_node()

    def _new_node(self) -> None:
        self.node = self.namespaces.create(f"node{self._nodes}")
        self._nodes += 1
        veth(self.node, "eth0", self.ctl, "eth0")
        run(["ip", "-n", self.ctl, "addr", "add", f"{CTL_IP}/24", "dev", "eth0"])
        run(["ip", "-n", self.node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0"])
        self._gateways[self.node] = CTL_IP

    def add_node(self, name: str, address: str, gateway: str) -> str:
        """Another node namespace `name` (address/prefix on its eth0) in its own subnet, whose
        gateway `gateway` is the control namespace's end of its veth; the control namespace
        forwards between the subnets.  Returns the namespace (also in `nodes`)."""
        ns = self.namespaces.create(name)
        prefix = address.split("/")[1]
        veth(ns, "eth0", self.ctl, f"to-{name}")
        run(["ip", "-n", self.ctl, "addr", "add", f"{gateway}/{prefix}", "dev", f"to-{name}"])
        run(["ip", "-n", ns, "addr", "add", address, "dev", "eth0"])
        run(["ip", "-n", ns, "route", "add", "default", "via", gateway])
        run(["ip", "netns", "exec", self.ctl, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.nodes[name] = ns
        self._gateways[ns] = gateway
        return ns

    def node_ns(self, node_name: str) -> str:
        return self.node if node_name == NODE_NAME else self.nodes[node_name]

    def fresh_node(self, felix: Felix) -> None:
        """Stop `felix` and replace the node namespace by an empty one (same names and address),
        so the next Felix starts from a blank dataplane as on a new node."""
        self.stop(felix)
        self.fresh_node_without_felix()

    def add_workload_interfaces(self, resources: Iterable[dict[str, Any]]) -> list[str]:
        """A veth per workload endpoint of this node (both ends in the node namespace, the
        workload end named w<hex>), so Felix can program its /32 routes."""
        names = []
        for r in resources:
            spec = r.get("spec", {})
            if r.get("kind") == "WorkloadEndpoint" and spec.get("node") == NODE_NAME:
                name = spec["interfaceName"]
                veth(self.node, name, self.node, "w" + secrets.token_hex(5))
                names.append(name)
        return names

    def add_workload_namespaces(
        self, resources: Iterable[dict[str, Any]], node_name: str = NODE_NAME
    ) -> dict[str, str]:
        """Like `add_workload_interfaces`, but each workload end goes into its own namespace as
        a pod's eth0 (its /32 address, default route via 169.254.1.1 as Calico's CNI sets it),
        for real packets; on node `node_name` (node1 or one from `add_node`).
        Returns {interfaceName: namespace}."""
        node = self.node_ns(node_name)
        made = {}
        for r in resources:
            spec = r.get("spec", {})
            if r.get("kind") == "WorkloadEndpoint" and spec.get("node") == node_name:
                iface = spec["interfaceName"]
                ns = self.namespaces.create("w" + iface[4:])
                veth(node, iface, ns, "eth0")
                ip = spec["ipNetworks"][0]
                run(["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"])
                run(["ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0"])
                run(["ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1"])
                made[iface] = ns
        run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # Proxy ARP for the pods' 169.254.1.1 answers only if the node has a route to it.
        run(["ip", "-n", node, "route", "replace", "default", "via", self._gateways[node]])
        return made

    def _started(self, peer: PeerProcess) -> Any:
        self._peers.append(peer)
        peer.start()
        return peer

    def etcd(self) -> NsEtcd:
        """A fresh etcd in the control namespace (also kept as `etcd_peer`, the latest one)."""
        self.etcd_peer = self._started(NsEtcd(self.ctl, CTL_IP))
        return self.etcd_peer

    def kube(self, *, crds: bool = True) -> NsKubeApiServer:
        """A fresh kube-apiserver in the control namespace on its own fresh etcd, with Calico's
        CRDs from the tarball (a Kubernetes datastore nothing else has written to)."""
        etcd = self._started(NsEtcd(self.ctl, CTL_IP))
        kube = self._started(NsKubeApiServer(self.ctl, CTL_IP, etcd=etcd))
        if crds:
            with entered(self.ctl):
                kube.apply_crds(calico_crd_dir())
        return kube

    @staticmethod
    def _store_kwargs(store: Store) -> dict[str, Any]:
        return {"kube": store} if isinstance(store, NsKubeApiServer) else {"etcd": store}

    def calico_typha(self, store: Store, **kwargs: Any) -> NsCalicoTypha:
        typha = NsCalicoTypha(
            self.ctl, CTL_IP, binary=self.typha_binary, **self._store_kwargs(store), **kwargs
        )
        self.typha_peer = self._started(typha)
        return typha

    def typha_py(self, store: Store, **kwargs: Any) -> NsTyphaPy:
        typha = NsTyphaPy(self.ctl, CTL_IP, **self._store_kwargs(store), **kwargs)
        self.typha_peer = self._started(typha)
        return typha

    def load(self, store: Store, resources: list[dict[str, Any]]) -> None:
        with entered(self.ctl):
            if isinstance(store, NsKubeApiServer):
                load_kubernetes(store, resources)
            else:
                load_etcd(store, resources)

    def felix(
        self,
        store: Store,
        typha: NsCalicoTypha | NsTyphaPy | None,
        node_name: str = NODE_NAME,
        **kwargs: Any,
    ) -> Felix:
        """Felix as `node_name` (node1, or a node from `add_node`) on `store` through `typha`
        (None: `typha_service=` in kwargs)."""
        if isinstance(store, NsKubeApiServer):
            kwargs["kubeconfig"] = store.kubeconfig_path
        else:
            kwargs["etcd_url"] = store.client_url
        if typha is not None:
            kwargs["typha"] = typha.address
        felix = Felix(
            netns=self.node_ns(node_name),
            hostname=node_name,
            binary=self.felix_binary,
            **kwargs,
        )
        return self._started(felix)

    def fresh_node_without_felix(self) -> None:
        """Replace the node namespace by an empty one (after a program other than Felix ran)."""
        # Delete the veth pair first: the kernel tears a deleted namespace down asynchronously,
        # and until then the control namespace's end would still hold the name eth0.
        run(["ip", "-n", self.ctl, "link", "del", "eth0"], check=False)
        self.namespaces.delete(self.node)
        self._new_node()

    def stop(self, peer: PeerProcess) -> None:
        peer.close()
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)

    def snapshot(self, node_name: str = NODE_NAME) -> snapshot.Snapshot:
        return snapshot.take(self.node_ns(node_name))

    def close(self) -> None:
        for peer in reversed(self._peers):
            with contextlib.suppress(Exception):
                peer.close()
        self._peers.clear()
        self.namespaces.cleanup()
