"""Datastore content for comparing Typhas: config/examples written to etcd, or translated into the
objects a Kubernetes cluster holds for the same cluster.

On etcd the v3 resources go in as they are (`typha.sync.etcd_writer`, Calico's etcd layout).  On
Kubernetes the Calico kinds that are custom resources go in as crd.projectcalico.org/v1 objects,
while what Kubernetes itself owns is made from the examples the way a cluster would show it:
v3 Nodes become core Nodes (Calico's node annotations), WorkloadEndpoints become running Pods
(Calico's CNI annotations), and the kns./ksa. Profiles become Namespaces and ServiceAccounts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.peers.process import PeerError
from typha.resources import load_documents

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "config" / "examples"
CRD_GROUP_VERSION = "crd.projectcalico.org/v1"
# Calico kinds that are custom resources in a Kubernetes datastore, and their plurals.
CRD_PLURALS = {
    "BGPConfiguration": "bgpconfigurations",
    "BGPFilter": "bgpfilters",
    "BGPPeer": "bgppeers",
    "BlockAffinity": "blockaffinities",
    "CalicoNodeStatus": "caliconodestatuses",
    "ClusterInformation": "clusterinformations",
    "FelixConfiguration": "felixconfigurations",
    "GlobalNetworkPolicy": "globalnetworkpolicies",
    "GlobalNetworkSet": "globalnetworksets",
    "HostEndpoint": "hostendpoints",
    "IPAMBlock": "ipamblocks",
    "IPPool": "ippools",
    "NetworkPolicy": "networkpolicies",
    "NetworkSet": "networksets",
    "StagedGlobalNetworkPolicy": "stagedglobalnetworkpolicies",
    "StagedKubernetesNetworkPolicy": "stagedkubernetesnetworkpolicies",
    "StagedNetworkPolicy": "stagednetworkpolicies",
    "Tier": "tiers",
}


EXTRA = Path(__file__).with_name("extra_resources.yaml")


# Kubernetes kinds a dataset may hold as they are.
NATIVE_PLURALS = {"NetworkPolicy": "networkpolicies", "Service": "services"}


def examples() -> list[dict[str, Any]]:
    """config/examples as v3 resources, in file order."""
    return load_documents(EXAMPLES_DIR)


def extended() -> list[dict[str, Any]]:
    """config/examples plus tests/calico/extra_resources.yaml (more kinds and rule shapes)."""
    return examples() + load_documents(EXTRA)


def kubernetes_extended() -> list[dict[str, Any]]:
    """`extended` plus what only a Kubernetes datastore holds: the seed's Kubernetes
    NetworkPolicy (in namespace myproject) and a Service."""
    from tests.seed_examples import db_network_policy

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "web", "labels": {"app": "nginx"}},
        "spec": {"selector": {"app": "nginx"}, "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    return [*extended(), db_network_policy("myproject"), service]


# -- etcd ----------------------------------------------------------------------------------------


def load_etcd(etcd: EtcdServer, resources: list[dict[str, Any]]) -> int | None:
    """Write `resources` to `etcd` in Calico's layout; returns the last revision."""
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_writer import apply_resources

    async def write() -> int | None:
        async with EtcdClient([etcd.client_url]) as client:
            return await apply_resources(client, resources)

    return trio.run(write)


# -- Kubernetes ----------------------------------------------------------------------------------


def _api_path(api_version: str, plural: str, namespace: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def _crd(resource: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = resource["kind"]
    meta = {k: v for k, v in resource["metadata"].items() if k in ("name", "namespace", "labels")}
    spec = resource.get("spec") or {}
    if kind == "BlockAffinity" and isinstance(spec.get("deleted"), bool):
        spec = {**spec, "deleted": str(spec["deleted"]).lower()}  # a string in the CRD
    body = {"apiVersion": CRD_GROUP_VERSION, "kind": kind, "metadata": meta, "spec": spec}
    return _api_path(CRD_GROUP_VERSION, CRD_PLURALS[kind], meta.get("namespace")), body


def _node(resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Node, its status) with the annotations calico-node writes for the v3 Node's BGP fields."""
    spec = resource.get("spec") or {}
    bgp = spec.get("bgp") or {}
    annotations = {}
    if bgp.get("ipv4Address"):
        annotations["projectcalico.org/IPv4Address"] = bgp["ipv4Address"]
    if bgp.get("ipv4IPIPTunnelAddr"):
        annotations["projectcalico.org/IPv4IPIPTunnelAddr"] = bgp["ipv4IPIPTunnelAddr"]
    if spec.get("ipv4VXLANTunnelAddr"):
        annotations["projectcalico.org/IPv4VXLANTunnelAddr"] = spec["ipv4VXLANTunnelAddr"]
    name = resource["metadata"]["name"]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": annotations},
    }
    addresses = [
        {"type": a["type"], "address": a["address"]}
        for a in spec.get("addresses") or ()
        if a.get("type") in ("InternalIP", "ExternalIP")
    ]
    status = {"status": {"addresses": [*addresses, {"type": "Hostname", "address": name}]}}
    return node, status


def _pod(resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Pod, its status) for a WorkloadEndpoint the CNI plugin wrote for a k8s pod."""
    meta = resource["metadata"]
    spec = resource["spec"]
    labels = {
        k: v
        for k, v in (meta.get("labels") or {}).items()
        if not k.startswith("projectcalico.org/")
    }
    ips = [n.split("/")[0] for n in spec.get("ipNetworks") or ()]
    annotations = {}
    if ips:
        annotations["cni.projectcalico.org/podIP"] = spec["ipNetworks"][0]
        annotations["cni.projectcalico.org/podIPs"] = ",".join(spec["ipNetworks"])
    if spec.get("containerID"):
        annotations["cni.projectcalico.org/containerID"] = spec["containerID"]
    ports = [
        {"name": p["name"], "containerPort": p["port"], "protocol": p.get("protocol", "TCP")}
        for p in spec.get("ports") or ()
    ]
    container: dict[str, Any] = {"name": "c", "image": "registry.k8s.io/pause:3.10"}
    if ports:
        container["ports"] = ports
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec["pod"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "nodeName": spec["node"],
            "serviceAccountName": spec.get("serviceAccountName") or "default",
            "containers": [container],
        },
    }
    status = {
        "status": {
            "phase": "Running",
            "podIP": ips[0] if ips else None,
            "podIPs": [{"ip": ip} for ip in ips],
        }
    }
    return pod, status


def kubernetes_objects(resources: list[dict[str, Any]]) -> list[tuple[str, dict, dict | None]]:
    """(collection path, body, status or None) in creation order: namespaces and service
    accounts first, then custom resources, nodes and pods."""
    namespaces: dict[str, dict[str, str]] = {}
    service_accounts: set[tuple[str, str]] = set()
    crs, nodes, pods = [], [], []
    native = []
    for r in resources:
        kind = r["kind"]
        if r.get("apiVersion") != "projectcalico.org/v3":
            # A Kubernetes object (e.g. a networking.k8s.io NetworkPolicy): created as it is.
            ns = r["metadata"].get("namespace")
            native.append((_api_path(r["apiVersion"], NATIVE_PLURALS[kind], ns), r, None))
            if ns:
                namespaces.setdefault(ns, {})
            continue
        if kind == "Profile":
            name = r["metadata"]["name"]
            labels = (r.get("spec") or {}).get("labelsToApply") or {}
            if name.startswith("kns."):
                own = {k[len("pcns.") :]: v for k, v in labels.items() if k.startswith("pcns.")}
                own.pop("projectcalico.org/name", None)
                namespaces.setdefault(name[4:], {}).update(own)
            elif name.startswith("ksa."):
                ns, sa = name[4:].split(".", 1)
                service_accounts.add((ns, sa))
                namespaces.setdefault(ns, {})
        elif kind == "Node":
            nodes.append(_node(r))
        elif kind == "WorkloadEndpoint":
            pods.append(_pod(r))
            namespaces.setdefault(r["metadata"]["namespace"], {})
        elif kind in CRD_PLURALS:
            crs.append(_crd(r))
            if r["metadata"].get("namespace"):
                namespaces.setdefault(r["metadata"]["namespace"], {})
        else:
            raise ValueError(f"no Kubernetes form for {kind}")
    out: list[tuple[str, dict, dict | None]] = []
    for ns, labels in sorted(namespaces.items()):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        out.append(("/api/v1/namespaces", body, None))
    for ns, sa in sorted(service_accounts):
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}
        out.append((_api_path("v1", "serviceaccounts", ns), body, None))
    for path, body in crs:
        out.append((path, body, None))
    out.extend(native)
    for node, status in nodes:
        out.append(("/api/v1/nodes", node, status))
    for pod, status in pods:
        out.append((_api_path("v1", "pods", pod["metadata"]["namespace"]), pod, status))
    return out


def load_kubernetes(kube: KubeApiServer, resources: list[dict[str, Any]]) -> None:
    """Create the Kubernetes form of `resources` (409 on a namespace is fine: kube-system etc.)."""
    with kube.http_client() as c:
        for path, body, status in kubernetes_objects(resources):
            r = c.post(path, json=body)
            if r.status_code == 409 and body["kind"] in ("Namespace", "ServiceAccount"):
                continue
            if r.status_code not in (200, 201):
                raise PeerError(f"create {body['kind']} at {path} -> {r.status_code}: {r.text}")
            if status is not None:
                name = body["metadata"]["name"]
                s = c.patch(
                    f"{path}/{name}/status",
                    json=status,
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                if s.status_code != 200:
                    raise PeerError(f"status of {body['kind']} {name} -> {s.status_code}: {s.text}")
