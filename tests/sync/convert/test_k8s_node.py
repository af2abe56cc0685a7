"""Kubernetes Nodes → v3 Nodes → Node keys."""

from __future__ import annotations

from typing import Any

from tests.sync.convert.helpers import mutate, packed
from typha.sync.convert import (
    k8s_to_updates,
    node_to_v3,
)

# --- Nodes ----------------------------------------------------------------------------------------

K8S_NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "node1",
        "resourceVersion": "77",
        "labels": {"kubernetes.io/hostname": "node1"},
        "annotations": {
            "projectcalico.org/IPv4Address": "10.0.0.11/24",
            "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.162.128",
            "projectcalico.org/ASNumber": "64512",
            "projectcalico.org/IPv4VXLANTunnelAddr": "192.168.162.129",
            "projectcalico.org/VXLANTunnelMACAddr": "66:aa:bb:cc:dd:ee",
            "projectcalico.org/WireguardPublicKey": "pk=",
            "projectcalico.org/IPv4WireguardInterfaceAddr": "192.168.162.130",
            "node.alpha.kubernetes.io/ttl": "0",
        },
    },
    "spec": {"podCIDR": "192.168.162.128/26", "podCIDRs": ["192.168.162.128/26"]},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "10.0.0.11"},
            {"type": "Hostname", "address": "node1"},
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}
        ],
        "allocatable": {"cpu": "4"},
    },
}


def test_node_to_v3() -> None:
    assert node_to_v3(K8S_NODE) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {
            "name": "node1",
            "labels": {"kubernetes.io/hostname": "node1"},
            # Calico's Kubernetes backend keeps the node's own labels as JSON here too.
            "annotations": {"projectcalico.org/kube-labels": '{"kubernetes.io/hostname":"node1"}'},
        },
        "spec": {
            "addresses": [
                {"address": "10.0.0.11/24", "type": "CalicoNodeIP"},
                {"address": "10.0.0.11", "type": "InternalIP"},
            ],
            "bgp": {
                "ipv4Address": "10.0.0.11/24",
                "ipv4IPIPTunnelAddr": "192.168.162.128",
                "asNumber": 64512,
            },
            "ipv4VXLANTunnelAddr": "192.168.162.129",
            "vxlanTunnelMACAddr": "66:aa:bb:cc:dd:ee",
            "wireguard": {"interfaceIPv4Address": "192.168.162.130"},
            "orchRefs": [{"nodeName": "node1", "orchestrator": "k8s"}],
        },
        "status": {"wireguardPublicKey": "pk=", "podCIDRs": ["192.168.162.128/26"]},
    }


def test_node_updates_and_heartbeat_invariance() -> None:
    updates = k8s_to_updates(K8S_NODE)
    assert [u.key for u in updates] == [
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    assert updates[3].value == {
        "interfaceIPv4Addr": "192.168.162.130",
        "publicKey": "pk=",
        "interfaceIPv6Addr": "",
        "publicKeyV6": "",
    }

    def heartbeat(n: dict[str, Any]) -> None:
        n["metadata"]["resourceVersion"] = "78"
        n["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:05:00Z"
        n["status"]["allocatable"]["cpu"] = "3"
        n["status"]["images"] = [{"names": ["nginx"]}]

    assert packed(k8s_to_updates(mutate(K8S_NODE, heartbeat))) == packed(updates)


def test_node_without_calico_annotations_falls_back_to_internal_ip() -> None:
    node = mutate(K8S_NODE, lambda n: n["metadata"].pop("annotations"))
    v3 = node_to_v3(node)
    assert v3["spec"]["addresses"] == [{"address": "10.0.0.11", "type": "InternalIP"}]
    assert "bgp" not in v3["spec"]
    assert [u.key for u in k8s_to_updates(node)] == [
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
