"""Rendering of the seed examples: chains, rules, ipsets, nat and restore text."""

from __future__ import annotations

import base64
import hashlib

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.ipsetspec import ipset_name, named_port_set_id
from felix_client.calc.model.objects import Action, PolicyId, PortRange
from felix_client.calc.model.values import parse_rule
from felix_client.calc.render.chains import HOOKS
from felix_client.calc.render.names import length_limited_id, policy_chain, profile_chain
from felix_client.calc.render.rules import render_rule
from felix_client.calc.render.text import ipset_restore_delta, iptables_restore
from felix_client.calc.rules import DataplaneRule, SideMatch, scan_rule
from felix_client.calc.selector import parse
from felix_client.calc.state import IPSet

NS_TERM = "projectcalico.org/namespace == 'myproject'"


def seed_cluster(extra=()):
    kvs = s.namespace_profiles("myproject") + s.service_account_profiles("myproject")
    kvs += [
        s.tier("default", 1_000_000),
        s.pool("10.0.0.0/16", ipip="Always", nat=True),
        s.node("node-1", "192.168.1.11/24"),
        s.node("node-2", "192.168.1.12/24"),
        s.block("10.0.1.0/26", "node-1"),
        s.block("10.0.2.0/26", "node-2"),
        s.wep("node-1", "myproject", "db", "10.0.1.5", {"app": "database"}),
        s.wep("node-2", "myproject", "fe", "10.0.2.7", {"app": "frontend"}),
        s.wep(
            "node-2",
            "myproject",
            "web",
            "10.0.2.8",
            {"app": "web"},
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        ),
    ]
    kvs += list(extra)
    engine = CalcEngine("node-1")
    engine.apply_updates(kvs)
    engine.snapshot_done()
    engine.flush()
    return engine, engine.state()


ALLOW_6379 = s.policy(
    "NetworkPolicy",
    "myproject",
    "allow-tcp-6379",
    f"(app == 'database') && {NS_TERM}",
    order=1000,
    types=("ingress", "egress"),
    inbound=[
        {
            "action": "Allow",
            "protocol": "TCP",
            "src_selector": f"({NS_TERM}) && (app == 'frontend')",
            "dst_ports": [6379],
        }
    ],
    outbound=[{"action": "Allow"}],
)

DB_IFACE = s.iface_name("myproject", "db")
RETURN_IF_PROFILE = (
    '-m mark --mark 0x10000/0x10000 -m comment --comment "Return if profile accepted" -j RETURN'
)


def test_length_limited_ids() -> None:
    assert length_limited_id("cali-pi-", "gnp/short") == "cali-pi-gnp/short"
    exact = "x" * 20
    assert length_limited_id("cali-pi-", exact) == "cali-pi-" + exact  # exactly 28
    long = "np/myproject/allow-tcp-6379"
    digest = base64.urlsafe_b64encode(hashlib.sha256(long.encode()).digest()).decode()
    assert length_limited_id("cali-pi-", long) == "cali-pi-_" + digest[:19]
    assert len(length_limited_id("cali-pi-", long)) == 28
    underscore = "_" + "y" * 19  # would be exactly 28 and start with "_": hashed
    assert length_limited_id("cali-pi-", underscore) != "cali-pi-" + underscore
    assert policy_chain(PolicyId("GlobalNetworkPolicy", "", "x"), True) == "cali-pi-gnp/x"
    assert policy_chain(PolicyId("KubernetesNetworkPolicy", "a", "b"), False) == "cali-po-knp/a/b"
    assert profile_chain("kns.default", True) == "cali-pri-kns.default"


def test_ipset_names() -> None:
    uid = parse("all()").uid
    assert ipset_name(uid) == "cali40s:5y5I3VdRZfDU01O--xXAPx2"
    assert len(ipset_name(uid)) == 31
    npid = named_port_set_id(uid, "tcp", "http")
    digest = base64.urlsafe_b64encode(hashlib.sha224(f"n:{uid},tcp,http".encode()).digest())
    assert npid == "n:" + digest.decode().rstrip("=")
    assert ipset_name(npid).startswith("cali40n:")


def test_allow_tcp_6379_frontend_to_database() -> None:
    _engine, state = seed_cluster([ALLOW_6379])
    pid = PolicyId("NetworkPolicy", "myproject", "allow-tcp-6379")
    pi, po = policy_chain(pid, True), policy_chain(pid, False)
    src_set = ipset_name(parse(f"({NS_TERM}) && (app == 'frontend')").uid)
    assert state.filter_chains[pi] == (
        f"-p tcp -m set --match-set {src_set} src -m multiport --dports 6379 "
        "-j MARK --set-xmark 0x10000/0x10000",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    )
    assert state.filter_chains[po] == (
        "-j MARK --set-xmark 0x10000/0x10000",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    )
    assert state.ipsets[src_set] == IPSet(src_set, "hash:net", frozenset({"10.0.2.7/32"}))
    tw = state.filter_chains[f"cali-tw-{DB_IFACE}"]
    assert tw == (
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-m conntrack --ctstate INVALID -j DROP",
        "-j MARK --set-xmark 0x0/0x30000",
        '-m comment --comment "Start of tier default" -j MARK --set-xmark 0x0/0x20000',
        f"-m mark --mark 0x0/0x20000 -j {pi}",
        '-m mark --mark 0x10000/0x10000 -m comment --comment "Return if policy accepted" -j RETURN',
        '-m mark --mark 0x0/0x20000 -m comment --comment "End of tier default. Drop if no policies '
        'passed packet" -j DROP',
        "-j cali-pri-kns.myproject",
        RETURN_IF_PROFILE,
        f"-j {profile_chain('ksa.myproject.default', True)}",
        RETURN_IF_PROFILE,
        '-m comment --comment "Drop if no profiles matched" -j DROP',
    )
    fw = state.filter_chains[f"cali-fw-{DB_IFACE}"]
    assert any("Drop VXLAN encapped" in r for r in fw) and any("-p 4 " in r for r in fw)
    # ksa profiles have no rules but are referenced, so their (empty) chains exist.
    assert state.filter_chains[profile_chain("ksa.myproject.default", True)] == ()
    assert state.filter_chains["cali-pri-kns.myproject"] == (
        "-j MARK --set-xmark 0x10000/0x10000",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    )


def test_policy_not_matching_local_endpoints_is_inactive() -> None:
    remote = s.policy(
        "NetworkPolicy",
        "myproject",
        "fe-only",
        "app == 'frontend'",
        inbound=[{"action": "Allow", "src_selector": "app == 'web'"}],
    )
    _, state = seed_cluster([remote])
    assert not any("fe-only" in name for name in state.filter_chains)
    assert ipset_name(parse("app == 'web'").uid) not in state.ipsets


def test_ingress_only_policy_has_no_egress_chain() -> None:
    policy = s.policy(
        "GlobalNetworkPolicy",
        "",
        "gnp-db",
        "app == 'database'",
        order=10,
        inbound=[{"action": "Deny", "protocol": "UDP"}],
        types=("ingress",),
    )
    _, state = seed_cluster([policy])
    assert "cali-pi-gnp/gnp-db" in state.filter_chains
    assert "cali-po-gnp/gnp-db" not in state.filter_chains
    assert state.filter_chains["cali-pi-gnp/gnp-db"] == (
        "-p udp -j MARK --set-xmark 0x40000/0x40000",
        "-m mark --mark 0x40000/0x40000 -j DROP",
    )


def test_tier_with_pass() -> None:
    extra = [
        s.tier("security", 100, "Pass"),
        s.policy(
            "GlobalNetworkPolicy",
            "",
            "sec",
            "has(app)",
            tier="security",
            order=1,
            inbound=[{"action": "Pass", "src_nets": ["10.0.0.0/16"]}, {"action": "Log"}],
        ),
        ALLOW_6379,
    ]
    _, state = seed_cluster(extra)
    text = "\n".join(state.filter_chains[f"cali-tw-{DB_IFACE}"])
    # Tiers in order; default action Pass means no end-of-tier drop for "security".
    assert text.index("Start of tier security") < text.index("Start of tier default")
    assert "End of tier security" not in text
    assert "End of tier default" in text
    assert state.filter_chains["cali-pi-gnp/sec"] == (
        "-s 10.0.0.0/16 -j MARK --set-xmark 0x20000/0x20000",
        "-m mark --mark 0x20000/0x20000 -j RETURN",
        '-j LOG --log-prefix "calico-packet: " --log-level 5',
    )


def test_named_port_rule_uses_selector_filtered_set() -> None:
    policy = s.policy(
        "NetworkPolicy",
        "myproject",
        "to-web",
        "app == 'database'",
        types=("egress",),
        outbound=[
            {
                "action": "Allow",
                "protocol": "TCP",
                "dst_selector": "app == 'web'",
                "dst_ports": ["http"],
            }
        ],
    )
    _, state = seed_cluster([policy])
    np_name = ipset_name(named_port_set_id(parse("app == 'web'").uid, "tcp", "http"))
    chain = state.filter_chains[
        policy_chain(PolicyId("NetworkPolicy", "myproject", "to-web"), False)
    ]
    assert (
        chain[0]
        == f"-p tcp -m set --match-set {np_name} dst,dst -j MARK --set-xmark 0x10000/0x10000"
    )
    assert state.ipsets[np_name] == IPSet(np_name, "hash:ip,port", frozenset({"10.0.2.8,tcp:8080"}))
    # Only named ports: no separate selector set for that side.
    assert ipset_name(parse("app == 'web'").uid) not in state.ipsets


def test_nat_outgoing_pool() -> None:
    _, state = seed_cluster()
    assert state.nat_chains["cali-nat-outgoing"] == (
        "-m set --match-set cali40masq-ipam-pools src "
        "-m set ! --match-set cali40network-ip-pools dst -j MASQUERADE --random-fully",
    )
    assert state.nat_chains["cali-POSTROUTING"][0] == "-j cali-nat-outgoing"
    assert state.ipsets["cali40masq-ipam-pools"].members == {"10.0.0.0/16"}
    assert state.ipsets["cali40all-hosts-net"].members == {"192.168.1.11/32", "192.168.1.12/32"}
    files = render_files(state)
    assert files["iptables-nat"].startswith(
        "*nat\n:cali-POSTROUTING - [0:0]\n:cali-nat-outgoing - [0:0]\n"
    )


def test_no_nat_outgoing_chain_is_empty() -> None:
    engine = CalcEngine("n")
    engine.apply_updates([s.pool("10.0.0.0/16")])
    engine.flush()
    assert engine.state().nat_chains["cali-nat-outgoing"] == ()


def test_match_blocks_for_multiple_cidrs_and_mixed_ports() -> None:
    rule = scan_rule(
        parse_rule(
            {
                "action": "Allow",
                "protocol": "TCP",
                "src_nets": ["10.0.0.0/8", "172.16.0.0/12"],
                "not_dst_nets": ["10.1.0.0/16", "10.2.0.0/16"],
                "dst_ports": [80, "http"],
            }
        )
    )
    assert rule is not None
    lines = render_rule(rule)
    np = ipset_name(named_port_set_id(parse("all()").uid, "tcp", "http"))
    assert lines == [
        "-j MARK --set-xmark 0x80000/0x180000",
        "-m mark --mark 0x80000/0x80000 -s 10.0.0.0/8 -j MARK --set-xmark 0x100000/0x100000",
        "-m mark --mark 0x80000/0x80000 -s 172.16.0.0/12 -j MARK --set-xmark 0x100000/0x100000",
        "-j MARK --set-xmark 0x0/0x80000",
        "-m mark --mark 0x100000/0x100000 -p tcp -m multiport --dports 80 "
        "-j MARK --set-xmark 0x80000/0x80000",
        f"-m mark --mark 0x100000/0x100000 -m set --match-set {np} dst,dst "
        "-j MARK --set-xmark 0x80000/0x80000",
        "-j MARK --set-xmark 0x0/0x100000",
        "-m mark --mark 0x80000/0x80000 -d 10.1.0.0/16 -j MARK --set-xmark 0x0/0x80000",
        "-m mark --mark 0x80000/0x80000 -d 10.2.0.0/16 -j MARK --set-xmark 0x0/0x80000",
        "-m mark --mark 0x80000/0x80000 -p tcp -j MARK --set-xmark 0x10000/0x10000",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    ]


def test_negations_icmp_and_multiport_chunks() -> None:
    rule = scan_rule(
        parse_rule(
            {
                "action": "Deny",
                "protocol": "ICMP",
                "icmp_type": 8,
                "icmp_code": 0,
                "not_src_nets": ["10.0.0.0/8"],
                "not_src_selector": "app == 'x'",
            }
        )
    )
    not_set = ipset_name(parse("app == 'x'").uid)
    assert render_rule(rule)[0] == (
        f"-p icmp -m icmp --icmp-type 8/0 ! -s 10.0.0.0/8 -m set ! --match-set "
        f"{not_set} src -j MARK --set-xmark 0x40000/0x40000"
    )
    ports = [*range(1, 15), "100:200"]  # 14 + 2 slots = 16 > 15
    rule = scan_rule(parse_rule({"action": "Allow", "protocol": "UDP", "not_dst_ports": ports}))
    first = render_rule(rule)[0]
    assert "-m multiport ! --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14" in first
    assert "-m multiport ! --dports 100:200" in first


def test_never_matching_rules_are_dropped() -> None:
    for raw in (
        {"action": "Allow", "ip_version": 6},
        {"action": "Allow", "src_nets": ["fd00::/64"]},
        {"action": "Allow", "dst_ports": [80]},  # numeric ports need a protocol
        {"action": "Allow", "protocol": "ICMP", "dst_ports": ["http"]},
        {"action": "Allow", "protocol": "TCP", "icmp_type": 8},
        {"action": "Allow", "protocol": "TCP", "not_protocol": "tcp"},
        {"action": "Allow", "protocol": "ICMPv6"},
        {"action": "Allow", "src_selector": "bad selector ("},
    ):
        assert scan_rule(parse_rule(raw)) is None, raw
    # A v6 net among v4 nets is ignored; negative v6 nets are vacuous.
    rule = scan_rule(
        parse_rule(
            {
                "action": "Allow",
                "src_nets": ["fd00::/64", "10.0.0.0/8"],
                "not_dst_nets": ["fd00::/8"],
            }
        )
    )
    assert rule is not None and rule.src.nets == ("10.0.0.0/8",) and rule.dst.not_nets == ()
    assert DataplaneRule(Action.ALLOW, None, None, SideMatch(), SideMatch()).ipsets() == ()
    assert PortRange(1, 1).render() == "1"


def test_restore_text_and_hooks() -> None:
    text = iptables_restore(
        "filter", {"cali-b": ("-j ACCEPT",), "cali-a": ()}, removed=["cali-old"]
    )
    assert text == (
        "*filter\n:cali-a - [0:0]\n:cali-b - [0:0]\n:cali-old - [0:0]\n"
        "-A cali-b -j ACCEPT\n-X cali-old\nCOMMIT\n"
    )
    assert [(h.table, h.chain, h.target) for h in HOOKS] == [
        ("filter", "INPUT", "cali-INPUT"),
        ("filter", "FORWARD", "cali-FORWARD"),
        ("filter", "OUTPUT", "cali-OUTPUT"),
        ("nat", "POSTROUTING", "cali-POSTROUTING"),
    ]
    assert HOOKS[0].check_args()[:4] == ["-t", "filter", "-C", "INPUT"]
    assert HOOKS[0].insert_args()[:5] == ["-t", "filter", "-I", "INPUT", "1"]
    delta = ipset_restore_delta(
        {"cali40s:new": IPSet("cali40s:new", "hash:net", frozenset({"10.0.0.1/32"}))},
        {"cali40s:x": {"10.0.0.2/32"}},
        {"cali40s:x": {"10.0.0.3/32"}},
    )
    assert delta.splitlines() == [
        "create cali40s:new hash:net family inet maxelem 1048576 --exist",
        "flush cali40s:new",
        "add cali40s:new 10.0.0.1/32 --exist",
        "del cali40s:x 10.0.0.3/32 --exist",
        "add cali40s:x 10.0.0.2/32 --exist",
        "COMMIT",
    ]


def test_render_files_has_all_files() -> None:
    _, state = seed_cluster([ALLOW_6379])
    files = render_files(state)
    assert set(files) == {"ipsets", "iptables-filter", "iptables-nat", "routes", "neighbours"}
    filt = files["iptables-filter"]
    assert filt.startswith("*filter\n") and filt.endswith("COMMIT\n")
    # Only cali-* chains are declared.
    declared = [line for line in filt.splitlines() if line.startswith(":")]
    assert declared and all(line.startswith(":cali-") for line in declared)
    assert files["ipsets"].endswith("COMMIT\n")


def test_endpoint_admin_down_gets_single_drop() -> None:
    engine = CalcEngine("node-1")
    engine.apply_updates(
        [*s.namespace_profiles("p"), s.wep("node-1", "p", "x", "10.0.0.1", state="down")]
    )
    engine.flush()
    iface = s.iface_name("p", "x")
    assert engine.state().filter_chains[f"cali-tw-{iface}"] == (
        '-m comment --comment "Endpoint admin disabled" -j DROP',
    )
