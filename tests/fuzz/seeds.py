"""Valid inputs for the structure-aware fuzzers: every resource of config/examples as etcd
key + JSON value, and Kubernetes objects of each kind the KDD watches convert.

Each seed converts to at least one model update (checked by the fuzz tests as their positive
control), so a mutation of it exercises the converters beyond their first type check.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from typha.resources import load_documents, validate_resources
from typha.sync.etcd_writer import encode_resource

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def _v3(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
    }


# Kinds that config/examples does not use.
EXTRA_V3: list[dict[str, Any]] = [
    _v3(
        "HostEndpoint",
        "node1-eth0",
        {
            "node": "node1",
            "interfaceName": "eth0",
            "expectedIPs": ["10.0.0.1"],
            "profiles": ["kns.web"],
            "ports": [{"name": "ssh", "protocol": "TCP", "port": 22}],
        },
        labels={"role": "host"},
    ),
    _v3("NetworkSet", "dns", {"nets": ["8.8.8.8/32", "1.1.1.0/24"]}, namespace="web"),
    _v3("GlobalNetworkSet", "blocked", {"nets": ["203.0.113.0/24"]}, labels={"k": "v"}),
    _v3("Tier", "security", {"order": 100, "defaultAction": "Pass"}),
    _v3("BGPConfiguration", "default", {"asNumber": 64512, "nodeToNodeMeshEnabled": True}),
    _v3(
        "GlobalNetworkPolicy",
        "security.deny-blocked",
        {
            "tier": "security",
            "order": 10,
            "selector": "all()",
            "types": ["Ingress", "Egress"],
            "ingress": [
                {
                    "action": "Deny",
                    "protocol": "TCP",
                    "source": {"selector": "k == 'v'", "notNets": ["10.0.0.0/8"]},
                    "destination": {"ports": [80, "443:445", "http"], "namespaceSelector": "all()"},
                },
                {
                    "action": "Allow",
                    "protocol": "ICMP",
                    "icmp": {"type": 8, "code": 0},
                    "ipVersion": 4,
                },
            ],
            "egress": [{"action": "Pass", "destination": {"nets": ["0.0.0.0/0"]}}],
        },
    ),
]


@cache
def etcd_seeds() -> tuple[tuple[str, bytes], ...]:
    """(etcd key, JSON value) for every example resource and the extra kinds."""
    resources = validate_resources([*load_documents(EXAMPLES), *EXTRA_V3])
    return tuple(encode_resource(r) for r in resources)


def k8s_seeds() -> list[dict[str, Any]]:
    """Fresh copies of one object per converted Kubernetes kind (pods, namespaces, service
    accounts, nodes, Kubernetes network policies, Calico CRDs)."""
    from tests.seed_examples import db_network_policy
    from tests.sync.convert.test_k8s_pod import POD

    objects: list[dict[str, Any]] = [
        copy.deepcopy(POD),
        db_network_policy(),
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "web", "labels": {"team": "a"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "web", "labels": {"x": "y"}},
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "node-1",
                "labels": {"kubernetes.io/hostname": "node-1"},
                "annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24"},
            },
            "spec": {"podCIDR": "192.168.1.0/24", "podCIDRs": ["192.168.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        },
    ]
    for _key, value in etcd_seeds():
        resource = json.loads(value)
        if resource.get("kind") in (None, "WorkloadEndpoint", "Profile", "Node"):
            continue  # IPAM values; KDD derives the others from pods, namespaces and nodes
        resource["apiVersion"] = "crd.projectcalico.org/v1"
        objects.append(resource)
    return objects


@cache
def base_model() -> dict[str, Any]:
    """The model state (key → value) that the etcd seeds convert to. Treat as read-only."""
    from typha.sync.convert.etcd import convert_etcd_kv

    model: dict[str, Any] = {}
    for key, raw in etcd_seeds():
        for update in convert_etcd_kv(key, json.loads(raw)):
            model[update.key] = update.value
    return model
