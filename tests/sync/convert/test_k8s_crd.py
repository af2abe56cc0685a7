"""Calico CRDs and passed-on Kubernetes objects → v3 resources → model keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.sync.convert.helpers import packed
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    crd_to_v3,
    k8s_to_updates,
    v3_to_updates,
)

# --- Calico CRDs ----------------------------------------------------------------------------------

CRD_SPECS: list[tuple[str, str, dict[str, Any]]] = [
    ("NetworkPolicy", "ns1", {"selector": "a == 'b'", "ingress": [{"action": "Allow"}]}),
    ("GlobalNetworkPolicy", "", {"selector": "a == 'b'", "egress": [{"action": "Deny"}]}),
    ("Tier", "", {"order": 100, "defaultAction": "Pass"}),
    ("IPPool", "", {"cidr": "10.244.0.0/16", "vxlanMode": "Always"}),
    ("HostEndpoint", "", {"node": "node1", "interfaceName": "eth0"}),
    ("FelixConfiguration", "", {"logSeverityScreen": "Info"}),
    ("BGPConfiguration", "", {"asNumber": 64512}),
    ("BGPPeer", "", {"peerIP": "10.0.0.1", "asNumber": 64513}),
    ("IPAMBlock", "", {"cidr": "10.244.1.0/26", "affinity": "host:node1"}),
    (
        "BlockAffinity",
        "",
        {"state": "confirmed", "node": "node1", "cidr": "10.244.1.0/26", "deleted": "false"},
    ),
    ("ClusterInformation", "", {"datastoreReady": True, "clusterGUID": "g"}),
    ("NetworkSet", "ns1", {"nets": ["10.0.0.0/8"]}),
    ("GlobalNetworkSet", "", {"nets": ["10.0.0.0/8"]}),
]


@pytest.mark.parametrize(("kind", "namespace", "spec"), CRD_SPECS, ids=[c[0] for c in CRD_SPECS])
def test_crd_kinds_convert_like_v3(kind: str, namespace: str, spec: dict[str, Any]) -> None:
    name = "default" if kind in ("FelixConfiguration", "ClusterInformation") else "x"
    meta: dict[str, Any] = {"name": name, "labels": {"l": "v"}}
    if namespace:
        meta["namespace"] = namespace
    v3 = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    crd_meta = {
        **meta,
        "resourceVersion": "123",
        "generation": 4,
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
    }
    crd = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": crd_meta,
        "spec": spec,
    }
    expected = v3_to_updates(v3)
    assert expected  # every listed kind produces something for Felix or confd

    def model(updates: list[Update]) -> list[Update]:
        return [u for u in updates if not u.key.startswith("/calico/resources/")]

    assert model(k8s_to_updates(crd)) == model(expected)
    # As Calico's Kubernetes backend: the custom resource's metadata, less its resourceVersion
    # (passthrough resources carry generation, managedFields and annotations like Go's).
    assert crd_to_v3(crd)["metadata"] == {
        k: v for k, v in crd_meta.items() if k != "resourceVersion"
    }
    churned = copy.deepcopy(crd)
    churned["metadata"]["resourceVersion"] = "124"
    assert packed(k8s_to_updates(churned)) == packed(k8s_to_updates(crd))


def test_unknown_crd_kind_and_unserved_objects() -> None:
    with pytest.raises(InvalidResource, match="unknown Calico CRD kind"):
        k8s_to_updates(
            {"apiVersion": "crd.projectcalico.org/v1", "kind": "Widget", "metadata": {"name": "w"}}
        )
    assert (
        k8s_to_updates({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}) == []
    )
    assert (
        k8s_to_updates({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
        == []
    )


def test_crd_metadata_annotation_and_derived_uid_like_calico() -> None:
    """Calico keeps v3 metadata it cannot store natively in `projectcalico.org/metadata`; it wins
    over the custom resource's own, and the uid is always derived from the resource's."""
    crd = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BGPPeer",
        "metadata": {
            "name": "peer1",
            "uid": "e925d60f-3534-4aa3-b405-07f50cae21d3",
            "resourceVersion": "9",
            "creationTimestamp": "2026-01-02T00:00:00Z",
            "labels": {"own": "1"},
            "annotations": {
                "projectcalico.org/metadata": '{"creationTimestamp":"2026-01-01T00:00:00Z",'
                '"labels":{"v3":"2"},"annotations":{"note":"x"}}',
                "other": "y",
            },
        },
        "spec": {"peerIP": "10.0.0.1", "asNumber": 64513},
    }
    assert crd_to_v3(crd)["metadata"] == {
        "name": "peer1",
        "uid": "97a46bf0-ac2c-4ac5-b4a0-e0af307584cb",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"own": "1", "v3": "2"},
        "annotations": {"other": "y", "note": "x"},
    }
    (resource,) = [u for u in k8s_to_updates(crd) if u.key.endswith("/bgppeers/peer1")]
    assert "resourceVersion" not in resource.value["metadata"]


def test_services_and_endpoint_slices_pass_through_like_calico() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "uid": "u"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {}},
    }
    assert k8s_to_updates(svc) == [
        Update(
            "/calico/resources/v3/projectcalico.org/kubernetesservice/shop/web",
            {
                "metadata": {"name": "web", "namespace": "shop", "uid": "u"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
                "status": {"loadBalancer": {}},
            },
        )
    ]
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "8"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"]}],
    }
    (update,) = k8s_to_updates(eps)
    assert (
        update.key == "/calico/resources/v3/projectcalico.org/kubernetesendpointslices/shop/web-1"
    )
    assert update.value == {
        "metadata": {"name": "web-1", "namespace": "shop"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"]}],
    }
