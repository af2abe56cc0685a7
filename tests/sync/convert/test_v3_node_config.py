"""v3 Node, FelixConfiguration, ClusterInformation and passthrough kinds → their model keys."""

from __future__ import annotations

import pytest

from tests.sync.convert.helpers import NODE, V3, as_map, one, res
from typha.model import keys
from typha.sync.base import ResourceExpander, Update
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- nodes and configuration ----------------------------------------------------------------------

NODE["status"] = {"wireguardPublicKey": "pubkey="}


def test_node() -> None:
    updates = v3_to_updates(NODE)
    assert [u.key for u in updates] == [
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    values = as_map(updates)
    assert values["/calico/v1/host/node1/config/IpInIpTunnelAddr"] == "192.168.162.128"
    assert values["/calico/v1/host/node1/config/VXLANTunnelMACAddr"] == "66:aa:bb:cc:dd:ee"
    # No host metadata key: Calico Typha never sends /calico/v1/host/<node>/metadata.
    assert "/calico/v1/host/node1/metadata" not in values
    assert values["/calico/v1/host/node1/wireguard"] == {
        "interfaceIPv4Addr": "192.168.162.130",
        "publicKey": "pubkey=",
        "interfaceIPv6Addr": "",
        "publicKeyV6": "",
    }
    passthrough = values["/calico/resources/v3/projectcalico.org/nodes/node1"]
    assert passthrough["metadata"] == {"name": "node1", "uid": "u-1"}  # resourceVersion dropped
    assert passthrough["spec"]["bgp"]["ipv4Address"] == "10.0.0.11/24"


def test_node_minimal_and_expander_deletes_dropped_keys() -> None:
    minimal = res("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.11/24"}})
    assert [u.key for u in v3_to_updates(minimal)] == [
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    expander = ResourceExpander()
    expander.expand("nodes/node1", v3_to_updates(NODE))
    out = expander.expand("nodes/node1", v3_to_updates(minimal))
    deleted = sorted(u.key for u in out if u.value is None)
    assert deleted == [
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
    ]


def test_node_invalid() -> None:
    with pytest.raises(InvalidResource, match=r"spec\.bgp\.ipv4Address"):
        v3_to_updates(res("Node", "n", {"bgp": {"ipv4Address": "10.0.0.300/24"}}))
    with pytest.raises(InvalidResource, match=r"spec\.bgp\.ipv4IPIPTunnelAddr"):
        v3_to_updates(res("Node", "n", {"bgp": {"ipv4IPIPTunnelAddr": "x"}}))


def test_felix_configuration_default_is_global_config() -> None:
    updates = v3_to_updates(
        res(
            "FelixConfiguration",
            "default",
            {
                "logSeverityScreen": "Info",
                "ipipEnabled": True,
                "ipipMTU": 1440,
                "reportingInterval": "0s",
                "iptablesRefreshInterval": "1m30s",
                "routeRefreshInterval": "100ms",
                "failsafeInboundHostPorts": [
                    {"protocol": "TCP", "port": 22},
                    {"protocol": "UDP", "port": 68, "net": "0.0.0.0/0"},
                ],
                "failsafeOutboundHostPorts": [],
                "routeTableRange": {"min": 1, "max": 250},
                "externalNodesCIDRList": ["10.0.0.0/8", "192.168.0.0/16"],
                "healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "90s"}],
                "ipv6Support": False,
                "unsetField": None,
            },
        )
    )
    assert as_map(updates) == {
        "/calico/v1/config/LogSeverityScreen": "Info",
        "/calico/v1/config/IpInIpEnabled": "true",
        "/calico/v1/config/IpInIpMtu": "1440",
        "/calico/v1/config/ReportingIntervalSecs": "0",
        "/calico/v1/config/IptablesRefreshInterval": "90",
        "/calico/v1/config/RouteRefreshInterval": "0.1",
        "/calico/v1/config/FailsafeInboundHostPorts": "tcp:22,udp:0.0.0.0/0:68",
        "/calico/v1/config/FailsafeOutboundHostPorts": "none",
        "/calico/v1/config/RouteTableRange": "1-250",
        "/calico/v1/config/ExternalNodesCIDRList": "10.0.0.0/8,192.168.0.0/16",
        "/calico/v1/config/HealthTimeoutOverrides": "InternalDataplaneMainLoop=90",
        "/calico/v1/config/Ipv6Support": "false",
    }
    keys_in_order = [u.key for u in updates]
    assert keys_in_order == sorted(keys_in_order)


def test_felix_configuration_names_follow_libcalico_go() -> None:
    """Config keys are named after Calico's Go fields (acronyms upper-case), as Calico Typha
    sends them; the one millisecond duration is in milliseconds."""
    spec = {
        "bpfEnabled": False,
        "nftablesMode": "Disabled",
        "nftablesFlowTableOffload": "Enabled",
        "vxlanEnabled": True,
        "wireguardKeepAlive": "25s",
        "iptablesLockProbeInterval": "50ms",
        "nodeSelector": "all()",
    }
    assert as_map(v3_to_updates(res("FelixConfiguration", "default", spec))) == {
        "/calico/v1/config/BPFEnabled": "false",
        "/calico/v1/config/NFTablesMode": "Disabled",
        "/calico/v1/config/NFTablesFlowTableOffload": "Enabled",
        "/calico/v1/config/VXLANEnabled": "true",
        "/calico/v1/config/WireguardPersistentKeepAlive": "25",
        "/calico/v1/config/IptablesLockProbeIntervalMillis": "50",
    }


def test_felix_configuration_node_and_other_names() -> None:
    updates = v3_to_updates(res("FelixConfiguration", "node.node1", {"logSeverityScreen": "Debug"}))
    assert updates == [Update("/calico/v1/host/node1/config/LogSeverityScreen", "Debug")]
    other = v3_to_updates(res("FelixConfiguration", "some-selector-scoped", {"bpfEnabled": True}))
    assert [u.key for u in other] == [
        "/calico/resources/v3/projectcalico.org/felixconfigurations/some-selector-scoped"
    ]


def test_cluster_information() -> None:
    updates = v3_to_updates(
        res(
            "ClusterInformation",
            "default",
            {
                "clusterGUID": "abc",
                "clusterType": "typha,k8s",
                "calicoVersion": "v3.32.1",
                "datastoreReady": True,
            },
        )
    )
    assert updates == [
        Update("/calico/v1/config/ClusterGUID", "abc"),
        Update("/calico/v1/config/ClusterType", "typha,k8s"),
        Update("/calico/v1/config/CalicoVersion", "v3.32.1"),
        Update("/calico/v1/Ready", True),
    ]
    assert v3_to_updates(res("ClusterInformation", "default", {"datastoreReady": False})) == [
        Update("/calico/v1/Ready", False)
    ]
    assert v3_to_updates(res("ClusterInformation", "other", {"datastoreReady": True})) == []


@pytest.mark.parametrize(
    ("kind", "plural", "namespace"),
    [
        ("BGPConfiguration", "bgpconfigurations", ""),
        ("BGPPeer", "bgppeers", ""),
        ("BGPFilter", "BGPFilters", ""),
        ("CalicoNodeStatus", "caliconodestatuses", ""),
        ("LiveMigration", "livemigrations", ""),
    ],
)
def test_passthrough_kinds(kind: str, plural: str, namespace: str) -> None:
    resource = res(kind, "x", {"b": 1, "a": 2}, namespace=namespace, resourceVersion="7")
    update = one(resource)
    assert update.key == f"/calico/resources/v3/projectcalico.org/{plural}/x"
    assert update.value == {
        "apiVersion": V3,
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {"a": 2, "b": 1},
    }
    assert list(update.value["spec"]) == ["a", "b"]
    assert keys.classify(update.key) is keys.KeyKind.RESOURCE


@pytest.mark.parametrize(
    "kind", ["IPReservation", "KubeControllersConfiguration", "IPAMConfiguration", "IPAMConfig"]
)
def test_kinds_not_for_felix(kind: str) -> None:
    assert v3_to_updates(res(kind, "default", {"x": 1})) == []
