"""Builders for model (key, value) pairs and a synthetic large cluster.

Used by the tests and by load tooling (``build_cluster`` / ``benchmark``). Values use the same
field names as Typha's model values (see ``model/values.py``).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from typha.model import keys

KV = tuple[str, Any]


def iface_name(namespace: str, pod: str) -> str:
    """Kubernetes interface name: ``cali`` + 11 hex chars of SHA-1("<ns>.<pod>")."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def wep(
    node: str,
    namespace: str,
    pod: str,
    ip: str,
    labels: Mapping[str, str] | None = None,
    *,
    sa: str | None = "default",
    ports: Sequence[Mapping[str, Any]] = (),
    state: str = "active",
    extra_ips: Sequence[str] = (),
) -> KV:
    """A Kubernetes workload endpoint with the implicit labels and kns./ksa. profiles."""
    all_labels = {
        "projectcalico.org/namespace": namespace,
        "projectcalico.org/orchestrator": "k8s",
    }
    profiles = [f"kns.{namespace}"]
    if sa:
        all_labels["projectcalico.org/serviceaccount"] = sa
        profiles.append(f"ksa.{namespace}.{sa}")
    all_labels.update(labels or {})
    value = {
        "state": state,
        "name": iface_name(namespace, pod),
        "mac": "ee:ee:ee:ee:ee:ee",
        "profile_ids": profiles,
        "ipv4_nets": [f"{ip}/32", *(f"{x}/32" for x in extra_ips)],
        "ipv6_nets": [],
        "labels": all_labels,
        "ports": [dict(p) for p in ports],
    }
    return keys.workload_endpoint_key(node, "k8s", f"{namespace}/{pod}", "eth0"), value


def namespace_profiles(namespace: str, labels: Mapping[str, str] | None = None) -> list[KV]:
    """The ``kns.<ns>`` profile (allow-all rules, pcns. labels)."""
    name = f"kns.{namespace}"
    profile_labels = {f"pcns.{k}": v for k, v in (labels or {}).items()}
    profile_labels["pcns.projectcalico.org/name"] = namespace
    return [
        (
            keys.profile_rules_key(name),
            {"inbound_rules": [{"action": "Allow"}], "outbound_rules": [{"action": "Allow"}]},
        ),
        (keys.profile_labels_key(name), profile_labels),
    ]


def service_account_profiles(namespace: str, sa: str = "default") -> list[KV]:
    """The ``ksa.<ns>.<sa>`` profile (no rules, pcsa. labels)."""
    name = f"ksa.{namespace}.{sa}"
    return [
        (keys.profile_rules_key(name), {"inbound_rules": [], "outbound_rules": []}),
        (keys.profile_labels_key(name), {"pcsa.projectcalico.org/name": sa}),
    ]


def policy(
    kind: str,
    namespace: str,
    name: str,
    selector: str,
    *,
    tier: str = "default",
    order: float | None = None,
    inbound: Sequence[Mapping[str, Any]] = (),
    outbound: Sequence[Mapping[str, Any]] = (),
    types: Sequence[str] = ("ingress",),
) -> KV:
    value: dict[str, Any] = {
        "namespace": namespace,
        "tier": tier,
        "selector": selector,
        "inbound_rules": [dict(r) for r in inbound],
        "outbound_rules": [dict(r) for r in outbound],
        "types": list(types),
    }
    if order is not None:
        value["order"] = order
    return keys.policy_key(kind, namespace, name), value


def tier(name: str, order: float | None, default_action: str = "Deny") -> KV:
    value: dict[str, Any] = {"default_action": default_action}
    if order is not None:
        value["order"] = order
    return keys.tier_key(name), value


def pool(cidr: str, *, ipip: str = "Never", vxlan: str = "Never", nat: bool = False) -> KV:
    value = {
        "cidr": cidr,
        "ipip_mode": ipip,
        "vxlan_mode": vxlan,
        "masquerade": nat,
        "disabled": False,
    }
    return keys.ip_pool_key(cidr), value


def block(cidr: str, node: str | None) -> KV:
    return keys.block_key(cidr), {
        "cidr": cidr,
        "affinity": f"host:{node}" if node else None,
        "allocations": [],
        "unallocated": [],
    }


def node(
    name: str, address_cidr: str, *, vtep_ip: str | None = None, vtep_mac: str | None = None
) -> KV:
    spec: dict[str, Any] = {"bgp": {"ipv4Address": address_cidr}}
    if vtep_ip:
        spec["ipv4VXLANTunnelAddr"] = vtep_ip
    if vtep_mac:
        spec["vxlanTunnelMACAddr"] = vtep_mac
    value = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": spec,
    }
    return keys.resource_key("nodes", name), value


def network_set(name: str, nets: Sequence[str], labels: Mapping[str, str]) -> KV:
    """A (Global)NetworkSet; a ``<ns>/<name>`` set carries its namespace like the converter
    writes it (namespace label, ``kns.<ns>`` profile)."""
    all_labels = dict(labels)
    profiles: list[str] = []
    namespace, sep, _ = name.partition("/")
    if sep:
        all_labels["projectcalico.org/namespace"] = namespace
        profiles.append(f"kns.{namespace}")
    value = {"nets": list(nets), "labels": all_labels, "profile_ids": profiles}
    return keys.network_set_key(name), value


# --- A large synthetic cluster -------------------------------------------------------------------


def build_cluster(
    n_endpoints: int = 20_000,
    n_policies: int = 500,
    n_nodes: int = 500,
    n_namespaces: int = 50,
    local_node: str = "node-0",
    seed: int = 1,
) -> list[KV]:
    """A Kubernetes-like cluster: ``n_endpoints`` pods spread evenly over ``n_nodes`` nodes (so
    ``local_node`` holds about ``n_endpoints / n_nodes``), one /26 block per 64 pods, an IPIP
    CrossSubnet pool with natOutgoing, namespaces with kns./ksa. profiles, and ``n_policies``
    policies: mostly namespaced "app A may reach app B on a port" rules, plus some GNPs in a
    ``security`` tier with Pass rules and a few using named ports, network sets and CIDRs."""
    rng = random.Random(seed)
    kvs: list[KV] = []
    apps = [f"app{i}" for i in range(40)]
    namespaces = [f"ns{i}" for i in range(n_namespaces)]
    kvs.append(tier("default", 1_000_000))
    kvs.append(tier("security", 100, "Deny"))
    kvs.append(pool("10.128.0.0/10", ipip="CrossSubnet", nat=True))
    for ns in namespaces:
        kvs += namespace_profiles(ns, {"team": f"team{int(ns[2:]) % 7}"})
        kvs += service_account_profiles(ns)
    for n in range(n_nodes):
        subnet = n // 100
        kvs.append(node(f"node-{n}", f"192.168.{subnet}.{n % 100 + 10}/24"))
    pods_per_node = max(1, n_endpoints // n_nodes)
    block_size = 64
    max_count = max(pods_per_node, n_endpoints - pods_per_node * (n_nodes - 1))
    stride = (max_count + block_size) // block_size  # blocks reserved per node
    pod_index = 0
    for n in range(n_nodes):
        node_name = f"node-{n}"
        count = pods_per_node if n < n_nodes - 1 else n_endpoints - pod_index
        # Addresses start at .1 of the node's first block (skipping the network address).
        for b in range((count + block_size) // block_size):
            base = 0x0A800000 + (n * stride + b) * block_size
            kvs.append(block(_ip(base) + "/26", node_name))
        for i in range(count):
            base = 0x0A800000 + n * stride * block_size + i + 1
            ns = namespaces[pod_index % n_namespaces]
            app = apps[rng.randrange(len(apps))]
            ports = [{"name": "http", "protocol": "TCP", "port": 8080}] if i % 3 == 0 else []
            kvs.append(
                wep(
                    node_name,
                    ns,
                    f"pod-{pod_index}",
                    _ip(base),
                    {"app": app, "version": f"v{i % 3}"},
                    ports=ports,
                )
            )
            pod_index += 1
    for i in range(20):
        kvs.append(
            network_set(
                f"ns{i % n_namespaces}/external-{i}",
                [f"172.{16 + i}.0.0/16"],
                {"role": "external", "zone": f"z{i % 4}"},
            )
        )
    for p in range(n_policies):
        ns = namespaces[p % n_namespaces]
        if p % 25 == 0:
            kvs.append(
                policy(
                    "GlobalNetworkPolicy",
                    "",
                    f"gnp-{p}",
                    f"app == '{apps[p % len(apps)]}'",
                    tier="security",
                    order=p,
                    inbound=[
                        {"action": "Deny", "src_selector": "role == 'external'"},
                        {"action": "Pass"},
                    ],
                    outbound=[{"action": "Pass"}],
                    types=("ingress", "egress"),
                )
            )
            continue
        target, source = apps[p % len(apps)], apps[(p * 7 + 3) % len(apps)]
        ns_term = f"projectcalico.org/namespace == '{ns}'"
        rule: dict[str, Any] = {
            "action": "Allow",
            "protocol": "TCP",
            "src_selector": f"({ns_term}) && (app == '{source}')",
            "dst_ports": [6379 + p % 10],
        }
        if p % 10 == 1:
            rule["dst_ports"] = ["http"]
        if p % 10 == 2:
            rule = {"action": "Allow", "src_nets": ["10.0.0.0/8", "172.16.0.0/12"]}
        kvs.append(
            policy(
                "NetworkPolicy",
                ns,
                f"allow-{source}-to-{target}-{p}",
                f"(app == '{target}') && {ns_term}",
                order=1000 + p % 5,
                inbound=[rule],
                outbound=[{"action": "Allow"}],
                types=("ingress", "egress") if p % 4 == 0 else ("ingress",),
            )
        )
    return kvs


def _ip(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def benchmark(
    kvs: Iterable[KV] | None = None, node_name: str = "node-0", render: bool = True
) -> dict[str, Any]:
    """Time a cold snapshot: apply + flush (+ state and render). Returns timings in seconds and
    sizes; makes no assertions."""
    from felix_client.calc.engine import CalcEngine, render_files

    kvs = list(kvs) if kvs is not None else build_cluster(local_node=node_name)
    engine = CalcEngine(node_name)
    t0 = time.perf_counter()
    engine.apply_updates(kvs)
    engine.snapshot_done()
    delta = engine.flush()
    t1 = time.perf_counter()
    out: dict[str, Any] = {"kvs": len(kvs), "calc_s": t1 - t0}
    if render:
        state = engine.state()
        files = render_files(state)
        t2 = time.perf_counter()
        out["render_s"] = t2 - t1
        out["total_s"] = t2 - t0
        out["ipsets"] = len(state.ipsets)
        out["ipset_members"] = sum(len(s.members) for s in state.ipsets.values())
        out["filter_chains"] = len(state.filter_chains)
        out["filter_rules"] = sum(len(c) for c in state.filter_chains.values())
        out["routes"] = len(state.routes)
        out["file_bytes"] = sum(len(f) for f in files.values())
    out["delta_chains"] = len(delta.filter_chains_changed)
    out["engine"] = engine
    return out
