"""v3 WorkloadEndpoint → WorkloadEndpoint keys: identity, names, deletion, validation."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.sync.convert.helpers import WEP, one, res
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    split_workload_endpoint_name,
    v3_to_updates,
    workload_endpoint_name,
)

# --- workload endpoints ---------------------------------------------------------------------------


def test_workload_endpoint() -> None:
    update = one(WEP)
    assert update.key == "/calico/v1/host/node-1/workload/k8s/web%2fnginx-abc/endpoint/eth0"
    assert update.value == {
        "state": "active",
        "name": "cali0123456789a",
        "active_instance_id": "",  # as Calico Typha: never the container ID
        "mac": "ee:ee:ee:ee:ee:01",
        "profile_ids": ["kns.web", "ksa.web.default"],
        "ipv4_nets": ["192.168.162.146/32"],
        "ipv6_nets": ["fd00::5/128"],
        "ipv4_nat": [{"int_ip": "192.168.162.146", "ext_ip": "172.16.0.5"}],
        "ipv6_nat": [],
        "labels": {
            "app": "nginx",
            "projectcalico.org/namespace": "web",
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "default",
        },
        "ipv4_gateway": None,
        "ipv6_gateway": None,
        "ports": [{"name": "http", "protocol": "tcp", "port": 80}],
        "generate_name": "nginx-",
        "allow_spoofed_source_ips": [],
        "annotations": {"a": "1", "b": "2"},
    }


def test_workload_endpoint_identity_from_name_only() -> None:
    wep = copy.deepcopy(WEP)
    for f in ("orchestrator", "node", "pod", "endpoint"):
        del wep["spec"][f]
    assert one(wep).key == one(WEP).key
    assert one(wep).value["labels"]["projectcalico.org/orchestrator"] == "k8s"


def test_workload_endpoint_non_k8s_orchestrator() -> None:
    wep = res(
        "WorkloadEndpoint",
        "host1-openstack-vm--1-tap0",
        {"ipNetworks": ["10.1.0.5/32"], "interfaceName": "tap0"},
        namespace="tenant",
    )
    update = one(wep)
    assert update.key == "/calico/v1/host/host1/workload/openstack/vm-1/endpoint/tap0"
    assert update.value["labels"] == {
        "projectcalico.org/namespace": "tenant",
        "projectcalico.org/orchestrator": "openstack",
    }


def test_workload_endpoint_without_ips_is_a_deletion() -> None:
    wep = copy.deepcopy(WEP)
    wep["spec"]["ipNetworks"] = []
    assert v3_to_updates(wep) == [Update(one(WEP).key, None)]


def test_workload_endpoint_invalid() -> None:
    bad = copy.deepcopy(WEP)
    bad["spec"]["ipNetworks"] = ["192.168.1.5/24"]
    with pytest.raises(InvalidResource, match=r"spec\.ipNetworks\[0\].*host bits"):
        v3_to_updates(bad)
    bad = res(
        "WorkloadEndpoint", "just-three-parts", {"ipNetworks": ["10.0.0.1/32"]}, namespace="n"
    )
    with pytest.raises(InvalidResource, match=r"metadata\.name"):
        v3_to_updates(bad)
    bad = copy.deepcopy(WEP)
    bad["spec"]["mac"] = "not-a-mac"
    with pytest.raises(InvalidResource, match=r"spec\.mac"):
        v3_to_updates(bad)
    bad = copy.deepcopy(WEP)
    bad["metadata"]["labels"] = {"app": 5}
    with pytest.raises(InvalidResource, match=r"metadata\.labels"):
        v3_to_updates(bad)


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("node1", "k8s", "nginx", "eth0"), "node1-k8s-nginx-eth0"),
        (("node-1", "k8s", "nginx-7c5d-2dv4k", "eth0"), "node--1-k8s-nginx--7c5d--2dv4k-eth0"),
        (
            ("ip-10-0-0-1.ec2.internal", "k8s", "a--b", "eth0"),
            "ip--10--0--0--1.ec2.internal-k8s-a----b-eth0",
        ),
    ],
)
def test_workload_endpoint_name_escaping(parts: tuple[str, str, str, str], name: str) -> None:
    assert workload_endpoint_name(*parts) == name
    assert split_workload_endpoint_name(name) == parts


_PART = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)


@given(_PART, _PART, _PART, _PART)
def test_workload_endpoint_name_roundtrip(node: str, orch: str, pod: str, ep: str) -> None:
    assert split_workload_endpoint_name(workload_endpoint_name(node, orch, pod, ep)) == (
        node, orch, pod, ep,
    )  # fmt: skip
