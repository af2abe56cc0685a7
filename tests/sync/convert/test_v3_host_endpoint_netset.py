"""v3 HostEndpoint, NetworkSet and GlobalNetworkSet → their model keys."""

from __future__ import annotations

import pytest

from tests.sync.convert.helpers import one, res
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- host endpoints, network sets -----------------------------------------------------------------


def test_host_endpoint() -> None:
    update = one(
        res(
            "HostEndpoint",
            "node1-eth0",
            {
                "node": "node1",
                "interfaceName": "eth0",
                "expectedIPs": ["10.0.0.11", "fd00::11"],
                "profiles": ["projectcalico-default-allow"],
                "ports": [{"name": "ssh", "protocol": "TCP", "port": 22}],
            },
            labels={"role": "k8s-node"},
        )
    )
    assert update == Update(
        "/calico/v1/host/node1/endpoint/node1-eth0",
        {
            "name": "eth0",
            "expected_ipv4_addrs": ["10.0.0.11"],
            "expected_ipv6_addrs": ["fd00::11"],
            "labels": {"role": "k8s-node"},
            "profile_ids": ["projectcalico-default-allow"],
            "ports": [{"name": "ssh", "protocol": "tcp", "port": 22}],
        },
    )
    with pytest.raises(InvalidResource, match=r"spec\.node: required"):
        v3_to_updates(res("HostEndpoint", "h", {"interfaceName": "eth0"}))
    with pytest.raises(InvalidResource, match="interfaceName or expectedIPs"):
        v3_to_updates(res("HostEndpoint", "h", {"node": "n"}))


def test_network_sets() -> None:
    gns = one(
        res("GlobalNetworkSet", "dns", {"nets": ["8.8.8.8", "1.1.1.0/24"]}, labels={"k": "v"})
    )
    assert gns == Update(
        "/calico/v1/netset/dns",
        {"nets": ["8.8.8.8/32", "1.1.1.0/24"], "labels": {"k": "v"}, "profile_ids": []},
    )
    ns = one(
        res(
            "NetworkSet",
            "office",
            {"nets": ["203.0.113.0/24"]},
            namespace="web",
            labels={"k": "v", "pcns.x": "spoof"},
        )
    )
    assert ns == Update(
        "/calico/v1/netset/web%2foffice",
        {
            "nets": ["203.0.113.0/24"],
            "labels": {"k": "v", "projectcalico.org/namespace": "web"},
            "profile_ids": ["kns.web"],
        },
    )
    with pytest.raises(InvalidResource, match=r"spec\.nets\[0\]"):
        v3_to_updates(res("GlobalNetworkSet", "x", {"nets": ["nope"]}))
