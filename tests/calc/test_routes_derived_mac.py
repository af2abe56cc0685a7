"""A VTEP without a MAC in the datastore: Felix derives it from the node's name (0x66, then the
first five bytes of SHA-1 of the name) for its own vxlan.calico and for remote VTEPs alike, so
a Node with only `ipv4VXLANTunnelAddr` still gets its tunnel.  Real Felix was seen to program
node3's device and node1's neighbour and FDB entries with 66:a4:6f:e0:c4:da
(tests/felix/test_felix_packets_vxlan.py)."""

from __future__ import annotations

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine
from felix_client.calc.routes import default_vtep_mac
from felix_client.dataplane import host_spec


def engine_for(me: str, *, with_macs: bool) -> CalcEngine:
    macs = {"node1": "66:00:00:00:00:01", "node3": "66:00:00:00:00:03"} if with_macs else {}
    engine = CalcEngine(me)
    engine.apply_updates(
        [
            s.pool("192.168.0.0/16", vxlan="CrossSubnet"),
            s.node("node1", "10.0.0.11/24", vtep_ip="192.168.162.128", vtep_mac=macs.get("node1")),
            s.node("node3", "10.0.1.13/24", vtep_ip="192.168.88.0", vtep_mac=macs.get("node3")),
            s.block("192.168.162.128/26", "node1"),
            s.block("192.168.88.0/26", "node3"),
        ]
    )
    engine.flush()
    return engine


def test_felix_derived_mac_for_a_node_name() -> None:
    assert default_vtep_mac("node3") == "66:a4:6f:e0:c4:da"  # what Felix put on node3's device


def test_remote_vtep_and_own_device_without_a_mac_in_the_datastore() -> None:
    state = engine_for("node1", with_macs=False).state()
    route = state.routes["192.168.88.0/26"].render()
    assert route == "192.168.88.0/26 via 192.168.88.0 dev vxlan.calico onlink mtu 1410"
    assert state.neighbours["192.168.88.0"].mac == "66:a4:6f:e0:c4:da"
    assert state.fdb["66:a4:6f:e0:c4:da"].dst == "10.0.1.13"
    node3 = engine_for("node3", with_macs=False)
    device = host_spec(node3.model, "node3").vxlan
    assert device is not None and device.mac == "66:a4:6f:e0:c4:da"


def test_a_mac_in_the_datastore_wins() -> None:
    state = engine_for("node1", with_macs=True).state()
    assert state.neighbours["192.168.88.0"].mac == "66:00:00:00:00:03"
    node3 = engine_for("node3", with_macs=True)
    device = host_spec(node3.model, "node3").vxlan
    assert device is not None and device.mac == "66:00:00:00:00:03"
