"""Routes, VXLAN neighbours and FDB entries (docs/felix-calc.md, "Routes")."""

from __future__ import annotations

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine
from felix_client.calc.routes import routes_diff
from felix_client.calc.state import Route
from typha.model import keys


def routes_for(kvs, me="node-1"):
    engine = CalcEngine(me)
    engine.apply_updates(kvs)
    engine.flush()
    state = engine.state()
    return {d: r.render() for d, r in state.routes.items()}, state


def cluster(pool_kwargs, extra=()):
    return [
        s.pool("10.0.0.0/16", **pool_kwargs),
        s.node("node-1", "192.168.1.11/24", vtep_ip="10.0.1.0", vtep_mac="66:00:00:00:00:01"),
        s.node("node-2", "192.168.1.12/24", vtep_ip="10.0.2.0", vtep_mac="66:00:00:00:00:02"),
        s.node("node-3", "192.168.2.13/24", vtep_ip="10.0.3.0", vtep_mac="66:00:00:00:00:03"),
        s.block("10.0.1.0/26", "node-1"),
        s.block("10.0.2.0/26", "node-2"),
        s.block("10.0.3.0/26", "node-3"),
        *extra,
    ]


def test_ipip_always() -> None:
    routes, state = routes_for(cluster({"ipip": "Always"}))
    assert routes == {
        "10.0.1.0/26": "blackhole 10.0.1.0/26 proto 80",
        "10.0.2.0/26": "10.0.2.0/26 via 192.168.1.12 dev tunl0 onlink proto 80",
        "10.0.3.0/26": "10.0.3.0/26 via 192.168.2.13 dev tunl0 onlink proto 80",
    }
    assert not state.neighbours and not state.fdb


def test_ipip_cross_subnet_is_direct_within_subnet() -> None:
    routes, _ = routes_for(cluster({"ipip": "CrossSubnet"}))
    assert routes["10.0.2.0/26"] == "10.0.2.0/26 via 192.168.1.12 onlink proto 80"
    assert routes["10.0.3.0/26"] == "10.0.3.0/26 via 192.168.2.13 dev tunl0 onlink proto 80"


def test_no_encapsulation_is_direct() -> None:
    routes, _ = routes_for(cluster({}))
    assert routes["10.0.3.0/26"] == "10.0.3.0/26 via 192.168.2.13 proto 80"
    assert routes["10.0.1.0/26"] == "blackhole 10.0.1.0/26 proto 80"


def test_vxlan_routes_neighbours_and_fdb() -> None:
    routes, state = routes_for(cluster({"vxlan": "Always"}))
    assert routes["10.0.2.0/26"] == "10.0.2.0/26 via 10.0.2.0 dev vxlan.calico onlink mtu 1410"
    assert routes["10.0.3.0/26"] == "10.0.3.0/26 via 10.0.3.0 dev vxlan.calico onlink mtu 1410"
    assert {ip: n.render() for ip, n in state.neighbours.items()} == {
        "10.0.2.0": "neigh 10.0.2.0 lladdr 66:00:00:00:00:02 dev vxlan.calico nud permanent",
        "10.0.3.0": "neigh 10.0.3.0 lladdr 66:00:00:00:00:03 dev vxlan.calico nud permanent",
    }
    assert state.fdb["66:00:00:00:00:03"].render() == (
        "fdb 66:00:00:00:00:03 dev vxlan.calico dst 192.168.2.13 self permanent"
    )


def test_vxlan_cross_subnet() -> None:
    routes, _ = routes_for(cluster({"vxlan": "CrossSubnet"}))
    assert routes["10.0.2.0/26"] == "10.0.2.0/26 via 192.168.1.12 onlink proto 80"
    assert routes["10.0.3.0/26"] == "10.0.3.0/26 via 10.0.3.0 dev vxlan.calico onlink mtu 1410"


def test_vtep_from_host_config_wins_and_missing_vtep_means_no_route() -> None:
    kvs = cluster({"vxlan": "Always"})
    kvs[3] = s.node("node-3", "192.168.2.13/24")  # no VTEP on the Node resource
    routes, _ = routes_for(kvs)
    assert "10.0.3.0/26" not in routes
    kvs += [
        (keys.host_config_key("node-3", "IPv4VXLANTunnelAddr"), "10.0.3.1"),
        (keys.host_config_key("node-3", "VXLANTunnelMACAddr"), "66:00:00:00:00:33"),
    ]
    routes, state = routes_for(kvs)
    assert routes["10.0.3.0/26"] == "10.0.3.0/26 via 10.0.3.1 dev vxlan.calico onlink mtu 1410"
    assert state.neighbours["10.0.3.1"].mac == "66:00:00:00:00:33"


def test_workload_routes_and_borrowed_addresses() -> None:
    kvs = cluster(
        {"ipip": "Always"},
        [
            s.wep("node-1", "ns", "local", "10.0.1.5"),
            s.wep("node-1", "ns", "local-borrowed", "10.0.2.40"),  # in node-2's block
            s.wep("node-2", "ns", "remote", "10.0.2.6"),  # covered by the block route
            s.wep("node-3", "ns", "remote-borrowed", "10.0.1.9"),  # in my block
            s.wep("node-3", "ns", "no-block", "10.0.9.9"),  # no block at all
        ],
    )
    routes, _ = routes_for(kvs)
    local = s.iface_name("ns", "local")
    assert routes["10.0.1.5/32"] == f"10.0.1.5/32 dev {local} scope link"
    assert (
        routes["10.0.2.40/32"]
        == f"10.0.2.40/32 dev {s.iface_name('ns', 'local-borrowed')} scope link"
    )
    assert "10.0.2.6/32" not in routes
    assert routes["10.0.1.9/32"] == "10.0.1.9/32 via 192.168.2.13 dev tunl0 onlink proto 80"
    assert routes["10.0.9.9/32"] == "10.0.9.9/32 via 192.168.2.13 dev tunl0 onlink proto 80"


def test_single_address_own_block_has_no_blackhole_and_unknown_node_no_route() -> None:
    routes, _ = routes_for([s.block("10.0.5.5/32", "node-1"), s.block("10.0.6.0/26", "ghost")])
    assert routes == {}


def test_incremental_route_updates() -> None:
    engine = CalcEngine("node-1")
    engine.apply_updates(cluster({"ipip": "Always"}))
    engine.flush()
    engine.apply_updates([s.node("node-3", "192.168.1.13/24")])  # moves into my subnet
    delta = engine.flush()
    assert delta.routes_added == {
        "10.0.3.0/26": Route("10.0.3.0/26", via="192.168.1.13", dev="tunl0", onlink=True)
    }
    assert not delta.routes_removed
    engine.apply_updates([(keys.block_key("10.0.3.0/26"), None)])
    delta = engine.flush()
    assert delta.routes_removed == {"10.0.3.0/26"}
    engine.apply_updates([s.pool("10.0.0.0/16", ipip="CrossSubnet")])
    delta = engine.flush()
    assert delta.routes_added == {
        "10.0.2.0/26": Route("10.0.2.0/26", via="192.168.1.12", onlink=True)
    }
    # Reassigning a block's affinity makes a remote workload in it borrowed.
    engine.apply_updates([s.wep("node-2", "ns", "w", "10.0.2.9")])
    assert not engine.flush().routes_added
    engine.apply_updates([s.block("10.0.2.0/26", "node-3")])
    delta = engine.flush()
    assert delta.routes_added == {
        # node-3 moved into my subnet
        "10.0.2.0/26": Route("10.0.2.0/26", via="192.168.1.13", onlink=True),
        "10.0.2.9/32": Route("10.0.2.9/32", via="192.168.1.12", onlink=True),
    }


def test_routes_diff() -> None:
    a = {"1": Route("1", type="blackhole"), "2": Route("2", via="x")}
    b = {"2": Route("2", via="y"), "3": Route("3", via="z")}
    added, removed = routes_diff(a, b)
    assert added == b and removed == {"1"}
