"""A vxlan.calico that goes and comes back (this node's own VTEP withdrawn from its Node resource,
then restored) gets its routes, neighbours and FDB entries back, although the calculation's
delta does not repeat them: the kernel drops them with the old device.  Real Felix, given the same
datastore changes, ends with the tunnel working again (tests/felix/test_felix_packets_vxlan.py).
"""

from __future__ import annotations

import pytest

from felix_client.calc import synthetic as s
from felix_client.dataplane import KernelDataplane, host_spec
from tests.dataplane import sample
from tests.dataplane.nstools import NetnsPool, ns_out, routes
from tests.dataplane.test_kernel import engine_for, node_with_pods

pytestmark = pytest.mark.netns

TUNNEL_ROUTE = "10.65.1.0/26 via 10.65.1.1 dev vxlan.calico onlink mtu 1410"
NEIGHBOUR = "10.65.1.1 lladdr 66:00:00:00:00:02 PERMANENT"
FDB = "66:00:00:00:00:02 dst 10.0.0.2 self permanent"


def vxlan_view(node: str) -> tuple[bool, bool, bool]:
    """(the tunnel route, the remote VTEP's neighbour entry, its FDB entry) present?"""
    if "vxlan.calico" not in ns_out(node, "ip", "-o", "link", "show"):
        return False, False, False
    neigh = ns_out(node, "ip", "neigh", "show", "dev", "vxlan.calico")
    fdb = ns_out(node, "bridge", "fdb", "show", "dev", "vxlan.calico")
    return TUNNEL_ROUTE in routes(node), NEIGHBOUR in neigh, FDB in fdb


async def test_recreated_vxlan_device_gets_its_routes_back(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database", "other")
    engine = engine_for(sample.sample_kvs("vxlan"))
    dp = KernelDataplane(node)

    async def change(*kvs: tuple[str, object]) -> None:
        engine.apply_updates(list(kvs))
        await dp.apply(engine.flush(), engine.state(), host_spec(engine.model, sample.NODE))

    try:
        await dp.resync(engine.state(), host_spec(engine.model, sample.NODE))
        assert vxlan_view(node) == (True, True, True)  # positive control
        # This node's tunnel address goes: no local VTEP, so no device (and, in the kernel,
        # nothing that was on it) ...
        await change(s.node(sample.NODE, "10.0.0.1/24"))
        assert "vxlan.calico" not in ns_out(node, "ip", "-o", "link", "show")
        assert TUNNEL_ROUTE not in routes(node)
        # ... and comes back: a new device, with the remote VTEP and its route again.
        await change(
            s.node(sample.NODE, "10.0.0.1/24", vtep_ip="10.65.0.1", vtep_mac="66:00:00:00:00:01")
        )
        assert vxlan_view(node) == (True, True, True)
        assert not dp.pending_work()
    finally:
        await dp.aclose()
