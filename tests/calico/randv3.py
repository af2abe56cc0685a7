"""A seeded random Calico cluster as v3 resources, for comparing Typhas on more than the examples.

Valid for both etcd and the Kubernetes CRDs (Calico kinds only: no Pods, Nodes or Namespaces, so
the same list loads into either datastore with `datasets.load_etcd` / `load_kubernetes`, where
WorkloadEndpoints and Nodes exist only on etcd).  Shapes are drawn from what Calico accepts:
selectors with every operator, rules with nets, ports, ICMP, negations, service accounts.
"""

from __future__ import annotations

import random
from typing import Any

V3 = "projectcalico.org/v3"
LABEL_KEYS = ("app", "tier", "env", "team")
LABEL_VALUES = ("web", "db", "api", "prod", "dev", "a", "b")


def _labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(LABEL_VALUES) for k in rng.sample(LABEL_KEYS, rng.randint(0, 3))}


def _selector(rng: random.Random) -> str:
    k, v = rng.choice(LABEL_KEYS), rng.choice(LABEL_VALUES)
    terms = [
        f"{k} == '{v}'",
        f"{k} != '{v}'",
        f"has({k})",
        f"!has({k})",
        f"{k} in {{'{v}', 'a'}}",
        f"{k} not in {{'{v}'}}",
        f"{k} starts with '{v[:1]}'",
        f"{k} contains '{v[-1:]}'",
        "all()",
    ]
    picked = rng.sample(terms, rng.randint(1, 3))
    op = rng.choice((" && ", " || "))
    text = op.join(picked)
    return f"({text})" if rng.random() < 0.3 else text


def _entity(rng: random.Random, ports_ok: bool) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if rng.random() < 0.4:
        e["selector"] = _selector(rng)
    if rng.random() < 0.2:
        e["notSelector"] = _selector(rng)
    if rng.random() < 0.3:
        e["namespaceSelector"] = _selector(rng)
    if rng.random() < 0.3:
        e["nets"] = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24"]
    if rng.random() < 0.15:
        e["notNets"] = [f"10.{rng.randrange(256)}.0.0/16"]
    if rng.random() < 0.15:
        e["serviceAccounts"] = {"names": rng.sample(["sa1", "sa2", "sa3"], 2)}
    if ports_ok and rng.random() < 0.5:
        e["ports"] = rng.sample([80, 443, 8080, "1000:2000", "http"], 2)
    if ports_ok and rng.random() < 0.15:
        e["notPorts"] = [22]
    return e


def _rule(rng: random.Random) -> dict[str, Any]:
    r: dict[str, Any] = {"action": rng.choice(("Allow", "Deny", "Pass", "Log"))}
    proto = rng.choice((None, "TCP", "UDP", "ICMP"))
    if proto:
        r["protocol"] = proto
    if proto == "ICMP" and rng.random() < 0.5:
        r["icmp"] = {"type": 8, "code": 0}
    ports_ok = proto in ("TCP", "UDP")
    for side in ("source", "destination"):
        e = _entity(rng, ports_ok)
        if e:
            r[side] = e
    return r


def cluster(seed: int, *, endpoints: int = 30, policies: int = 12) -> list[dict[str, Any]]:
    """Tiers, global and namespaced policies, network sets, host endpoints and (etcd only)
    WorkloadEndpoints, all drawn from ``seed``."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [
        {"apiVersion": V3, "kind": "Tier", "metadata": {"name": "rand"}, "spec": {"order": 300}}
    ]
    namespaces = ("ns-a", "ns-b")
    for i in range(policies):
        spec: dict[str, Any] = {"selector": _selector(rng)}
        if rng.random() < 0.5:
            spec["order"] = rng.choice((1, 10, 100.5, 1000))
        if rng.random() < 0.6:
            spec["ingress"] = [_rule(rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            spec["egress"] = [_rule(rng) for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.5:
            spec["types"] = rng.choice(
                (["Ingress"], ["Egress"], ["Ingress", "Egress"], ["Egress", "Ingress"])
            )
        tiered = rng.random() < 0.3
        name = f"rand.p{i}" if tiered else f"p{i}"
        if tiered:
            spec["tier"] = "rand"
        if rng.random() < 0.5:
            if rng.random() < 0.3:
                spec["namespaceSelector"] = _selector(rng)
            out.append(
                {
                    "apiVersion": V3,
                    "kind": "GlobalNetworkPolicy",
                    "metadata": {"name": name},
                    "spec": spec,
                }
            )
        else:
            ns = rng.choice(namespaces)
            out.append(
                {
                    "apiVersion": V3,
                    "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": spec,
                }
            )
    for i in range(4):
        out.append(
            {
                "apiVersion": V3,
                "kind": "GlobalNetworkSet",
                "metadata": {"name": f"gns{i}", "labels": _labels(rng)},
                "spec": {"nets": [f"192.0.{i}.0/24"]},
            }
        )
    for i in range(3):
        out.append(
            {
                "apiVersion": V3,
                "kind": "HostEndpoint",
                "metadata": {"name": f"hep{i}", "labels": _labels(rng)},
                "spec": {
                    "node": f"node{i % 3 + 1}",
                    "interfaceName": f"eth{i}",
                    "expectedIPs": [f"10.0.0.{20 + i}"],
                },
            }
        )
    for i in range(endpoints):
        ns = rng.choice(namespaces)
        node = f"node{i % 3 + 1}"
        pod = f"pod-{i}"
        labels = _labels(rng)
        labels.update({"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s"})
        out.append(
            {
                "apiVersion": V3,
                "kind": "WorkloadEndpoint",
                "metadata": {
                    "name": f"{node}-k8s-{pod.replace('-', '--')}-eth0",
                    "namespace": ns,
                    "labels": labels,
                },
                "spec": {
                    "orchestrator": "k8s",
                    "node": node,
                    "pod": pod,
                    "endpoint": "eth0",
                    "interfaceName": f"cali{i:011d}",
                    "ipNetworks": [f"192.168.{i // 200}.{i % 200 + 2}/32"],
                    "profiles": [f"kns.{ns}"],
                },
            }
        )
    return out
