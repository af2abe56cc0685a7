"""felix_client's VXLAN shapes as real Felix programs them (the differences the VXLAN
Felix-judges-felix_client test found; docs/felix-calc.md, "Routes" and "Fixed sets"):

* a route through vxlan.calico carries the VXLAN MTU (FelixConfiguration vxlanMTU, else the host
  MTU minus 50) and the device-route protocol (boot: no "proto" shown), not protocol 80;
* a CrossSubnet pool's block on a node in our subnet is routed directly and "onlink";
* VXLAN peers are matched on cali40all-vxlan-net (the remote nodes with a VTEP), and
  cali40all-hosts-net exists only while a pool uses IPIP.
"""

from __future__ import annotations

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine
from typha.model import keys

VXLAN_ROUTE = "10.0.3.0/26 via 10.0.3.0 dev vxlan.calico onlink"


def cluster(**pool):
    return [
        s.pool("10.0.0.0/16", **pool),
        s.node("node-1", "192.168.1.11/24", vtep_ip="10.0.1.0", vtep_mac="66:00:00:00:00:01"),
        s.node("node-2", "192.168.1.12/24", vtep_ip="10.0.2.0", vtep_mac="66:00:00:00:00:02"),
        s.node("node-3", "192.168.2.13/24", vtep_ip="10.0.3.0", vtep_mac="66:00:00:00:00:03"),
        s.node("node-4", "192.168.2.14/24"),  # no VTEP: not a VXLAN peer
        s.block("10.0.1.0/26", "node-1"),
        s.block("10.0.2.0/26", "node-2"),
        s.block("10.0.3.0/26", "node-3"),
    ]


def engine_for(kvs, host_mtu: int | None = None) -> CalcEngine:
    engine = CalcEngine("node-1")
    if host_mtu is not None:
        engine.set_host_mtu(host_mtu)
    engine.apply_updates(kvs)
    engine.flush()
    return engine


def rendered(engine: CalcEngine, dst: str) -> str:
    return engine.state().routes[dst].render()


def test_vxlan_route_has_the_vxlan_mtu_and_no_protocol() -> None:
    # Without a detected host MTU: Felix's fallback host MTU (1460) minus 50.
    engine = engine_for(cluster(vxlan="Always"))
    assert rendered(engine, "10.0.3.0/26") == f"{VXLAN_ROUTE} mtu 1410"
    assert engine.state().routes["10.0.3.0/26"].proto is None
    # The host MTU the backend detected, minus 50.
    engine = engine_for(cluster(vxlan="Always"), host_mtu=1500)
    assert rendered(engine, "10.0.3.0/26") == f"{VXLAN_ROUTE} mtu 1450"
    assert engine.vxlan_mtu == 1450
    # Configured VXLANMTU wins, and a change re-renders the routes.
    engine.apply_updates([(keys.global_config_key("VXLANMTU"), "1400")])
    delta = engine.flush()
    assert delta.routes_added["10.0.3.0/26"].render() == f"{VXLAN_ROUTE} mtu 1400"
    engine.apply_updates([(keys.host_config_key("node-1", "VXLANMTU"), "1300")])
    engine.flush()
    assert rendered(engine, "10.0.3.0/26") == f"{VXLAN_ROUTE} mtu 1300"
    # Control: routes not through the tunnel keep protocol 80 and get no MTU.
    assert rendered(engine, "10.0.1.0/26") == "blackhole 10.0.1.0/26 proto 80"
    ipip = engine_for(cluster(ipip="Always"), host_mtu=1500)
    assert rendered(ipip, "10.0.3.0/26") == "10.0.3.0/26 via 192.168.2.13 dev tunl0 onlink proto 80"


def test_cross_subnet_direct_route_is_onlink() -> None:
    for mode in ("vxlan", "ipip"):
        engine = engine_for(cluster(**{mode: "CrossSubnet"}))
        assert rendered(engine, "10.0.2.0/26") == "10.0.2.0/26 via 192.168.1.12 onlink proto 80"
    # Control: a pool without encapsulation is routed plainly (BGP's routes, not Felix's
    # same-subnet route class).
    engine = engine_for(cluster())
    assert rendered(engine, "10.0.2.0/26") == "10.0.2.0/26 via 192.168.1.12 proto 80"


def test_vxlan_peers_set_holds_remote_vteps_and_is_what_the_rules_match() -> None:
    engine = engine_for(cluster(vxlan="Always"))
    state = engine.state()
    assert state.ipsets["cali40all-vxlan-net"].members == {"192.168.1.12/32", "192.168.2.13/32"}
    assert "cali40all-hosts-net" not in state.ipsets  # Felix keeps it only with IPIP
    vxlan_rules = [
        r
        for chain in ("cali-INPUT", "cali-OUTPUT")
        for r in state.filter_chains[chain]
        if "--dports 4789" in r and "--match-set" in r
    ]
    assert len(vxlan_rules) == 2
    assert all("--match-set cali40all-vxlan-net " in r for r in vxlan_rules), vxlan_rules
    # A node's VTEP going changes the set.
    engine.apply_updates([s.node("node-3", "192.168.2.13/24")])
    delta = engine.flush()
    assert delta.ipset_members_removed == {"cali40all-vxlan-net": frozenset({"192.168.2.13/32"})}
    # The pool turns to IPIP: the VXLAN set goes, the hosts' set (every node) comes and the
    # IPIP rules match on it.
    engine.apply_updates([s.pool("10.0.0.0/16", ipip="Always")])
    delta = engine.flush()
    assert "cali40all-vxlan-net" in delta.ipsets_removed
    hosts = delta.ipsets_created["cali40all-hosts-net"].members
    assert hosts == {f"192.168.{n}/32" for n in ("1.11", "1.12", "2.13", "2.14")}
    state = engine.state()
    assert "cali40all-vxlan-net" not in state.ipsets
    assert any("-p 4 -m set --match-set cali40all-hosts-net src" in r
               for r in state.filter_chains["cali-INPUT"])  # fmt: skip
