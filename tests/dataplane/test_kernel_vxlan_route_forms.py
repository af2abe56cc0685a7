"""The kernel backend programs Felix's VXLAN route forms (docs/dataplane.md, "Routes"): the
route through vxlan.calico with the VXLAN MTU and the device-route protocol, taken from the host
MTU the backend detects as Felix does (the smallest MTU of the up interfaces matching Felix's
MTU interface pattern); the direct route of a CrossSubnet pool onlink through the uplink; and a
leftover route through vxlan.calico is ours to delete although it has no protocol 80.
"""

from __future__ import annotations

import pytest

from felix_client.calc import synthetic as s
from felix_client.dataplane import KernelDataplane, host_spec
from tests.dataplane import sample
from tests.dataplane.nstools import NetnsPool, ns_out, nsrun, routes
from tests.dataplane.test_kernel import DB_IF, engine_for, node_with_pods

pytestmark = pytest.mark.netns


async def test_vxlan_route_forms_in_the_kernel(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database", "other")
    nsrun(node, "ip", "link", "set", "eth0", "mtu", "1400")
    # A workload interface with a smaller MTU is not a host interface: not counted.
    nsrun(node, "ip", "link", "set", DB_IF, "mtu", "1300")
    engine = engine_for(sample.sample_kvs("vxlan"))
    dp = KernelDataplane(node)
    try:
        host_mtu = await dp.host_mtu()
        assert host_mtu == 1400
        engine.set_host_mtu(host_mtu)
        engine.flush()
        assert engine.vxlan_mtu == 1350
        # A leftover route through vxlan.calico (boot protocol, as Felix writes them) and,
        # as control, a boot-protocol route on the uplink that is not ours.
        await dp.resync(engine.state(), host_spec(engine.model, sample.NODE, engine.vxlan_mtu))
        nsrun(node, "ip", "route", "add", "10.77.0.0/26", "via", "10.65.1.1", "dev",
              "vxlan.calico", "onlink")  # fmt: skip
        nsrun(node, "ip", "route", "add", "10.88.0.0/26", "via", "10.0.0.9", "dev", "eth0")
        await dp.resync(engine.state(), host_spec(engine.model, sample.NODE, engine.vxlan_mtu))
        shown = routes(node)
        assert "10.65.1.0/26 via 10.65.1.1 dev vxlan.calico onlink mtu 1350" in shown, shown
        assert not any(r.startswith("10.77.0.0/26") for r in shown), shown
        assert "10.88.0.0/26 via 10.0.0.9 dev eth0" in shown, shown
        assert "mtu 1350" in ns_out(node, "ip", "link", "show", "vxlan.calico")
        # CrossSubnet: n2 shares our subnet, so its block is routed directly, onlink through
        # the interface that holds our address (the incremental path replaces the tunnel route).
        engine.apply_updates([s.pool(sample.POOL, vxlan="CrossSubnet", nat=True)])
        delta = engine.flush()
        await dp.apply(delta, engine.state(), host_spec(engine.model, sample.NODE, 1350))
        shown = routes(node)
        assert "10.65.1.0/26 via 10.0.0.2 dev eth0 proto 80 onlink" in shown, shown
        assert not dp.pending_work()
    finally:
        await dp.aclose()
