"""The model adapter: key parsing, tolerant value parsing, and the converter's real output."""

from __future__ import annotations

import random

import pytest

from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.model.keys import Kind, parse_key
from felix_client.calc.model.objects import Action, EncapMode, PolicyId, PortRange
from felix_client.calc.model.updates import parse_update
from tests.calc.iptsim import IpsetSim, IptablesSim
from tests.calc.test_crosscheck import simulate
from tests.calc.verdict import INGRESS, Packet, verdict
from tests.seed_examples import db_network_policy
from typha.model import keys


@pytest.mark.parametrize(
    ("key", "kind", "ident", "host"),
    [
        (
            keys.workload_endpoint_key("n1", "k8s", "ns/pod", "eth0"),
            Kind.WORKLOAD_ENDPOINT,
            None,
            "n1",
        ),
        (keys.host_endpoint_key("n1", "eth0"), Kind.HOST_ENDPOINT, None, "n1"),
        (
            keys.policy_key("GlobalNetworkPolicy", "", "x"),
            Kind.POLICY,
            PolicyId("GlobalNetworkPolicy", "", "x"),
            "",
        ),
        (
            keys.policy_key("NetworkPolicy", "ns", "a/b"),
            Kind.POLICY,
            PolicyId("NetworkPolicy", "ns", "a/b"),
            "",
        ),
        (
            "/calico/v1/policy/tier/default/policy/shop%2fknp.default.allow-db",
            Kind.POLICY,
            PolicyId("", "shop", "knp.default.allow-db", legacy_tier="default"),
            "",
        ),
        (keys.tier_key("t"), Kind.TIER, "t", ""),
        (keys.profile_rules_key("kns.a"), Kind.PROFILE_RULES, "kns.a", ""),
        (keys.profile_labels_key("kns.a"), Kind.PROFILE_LABELS, "kns.a", ""),
        (keys.network_set_key("ns/x"), Kind.NETWORK_SET, "ns/x", ""),
        (keys.ip_pool_key("10.0.0.0/16"), Kind.IP_POOL, "10.0.0.0/16", ""),
        (keys.ip_pool_key("fd00::/64"), Kind.IGNORED, None, ""),
        (keys.block_key("10.0.1.0/26"), Kind.BLOCK, "10.0.1.0/26", ""),
        (keys.block_key("fd00::/122"), Kind.IGNORED, None, ""),
        (
            keys.host_config_key("n1", "IPv4VXLANTunnelAddr"),
            Kind.HOST_CONFIG,
            "IPv4VXLANTunnelAddr",
            "n1",
        ),
        (keys.global_config_key("LogPrefix"), Kind.GLOBAL_CONFIG, "LogPrefix", ""),
        (keys.resource_key("nodes", "n1"), Kind.NODE, "n1", ""),
        ("/calico/v1/host/n1/bird_ip", Kind.HOST_IP, "n1", "n1"),
        (keys.READY_FLAG_KEY, Kind.READY, None, ""),
        (keys.block_affinity_key("n1", "10.0.1.0/26"), Kind.IGNORED, None, ""),
        (keys.resource_key("bgppeers", "p"), Kind.IGNORED, None, ""),
        ("/something/else", Kind.IGNORED, None, ""),
    ],
)
def test_parse_key(key, kind, ident, host) -> None:
    parsed = parse_key(key)
    assert parsed.kind is kind
    if ident is not None:
        assert parsed.id == ident
    assert parsed.host == host


def test_tolerant_values() -> None:
    pool = parse_update(
        keys.ip_pool_key("10.0.0.0/16"),
        {"cidr": "10.0.0.0/16", "ipipMode": "cross-subnet", "natOutgoing": True},
    ).value
    assert pool.ipip_mode is EncapMode.CROSS_SUBNET and pool.masquerade
    assert (
        parse_update(keys.ip_pool_key("10.0.0.0/16"), {"ipip": "tunl0"}).value.ipip_mode
        is EncapMode.ALWAYS
    )
    tier = parse_update(keys.tier_key("t"), {"order": 5, "defaultAction": "Pass"}).value
    assert tier.order == 5 and tier.default_action is Action.PASS
    policy = parse_update(
        keys.policy_key("NetworkPolicy", "ns", "p"),
        {
            "inboundRules": [
                {
                    "action": "next-tier",
                    "protocol": "TCP",
                    "dstPorts": [80, "90:99", "http", "8080"],
                    "srcNets": ["10.0.0.1"],
                    "notICMP": {"type": 8},
                }
            ],
            "types": ["Ingress"],
            "order": None,
        },
    ).value
    rule = policy.inbound_rules[0]
    assert rule.action is Action.PASS and rule.protocol == 6
    assert rule.dst_ports == (PortRange(80, 80), PortRange(90, 99), "http", PortRange(8080, 8080))
    assert rule.src_nets == ("10.0.0.1/32",) and rule.not_icmp_type == 8
    assert (
        policy.ingress and not policy.egress and policy.order is None and policy.tier == "default"
    )
    # An unparseable value is a deletion, as Felix's validation filter would make it.
    bad = parse_update(
        keys.policy_key("NetworkPolicy", "ns", "p"), {"inbound_rules": [{"action": "explode"}]}
    )
    assert bad.kind is Kind.POLICY and bad.value is None
    netset = parse_update(
        keys.network_set_key("g"), {"nets": ["0.0.0.0/0", "fd00::/8", "1.2.3.4"]}
    ).value
    assert netset.ipv4_nets == ("0.0.0.0/1", "128.0.0.0/1", "1.2.3.4/32")
    block = parse_update(
        keys.block_key("10.0.1.0/26"), {"cidr": "10.0.1.0/26", "affinity": "virtual:x"}
    ).value
    assert block.affinity_host is None


GOOD_WEP = {
    "state": "active",
    "name": "cali1",
    "mac": "ee:ee:ee:ee:ee:ee",
    "profile_ids": ["kns.ns"],
    "ipv4_nets": ["10.0.1.5/32"],
    "labels": {"app": "a"},
    "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
}


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        # Each was found by the fuzzers (tests/fuzz): accepted once, it failed later in the
        # route index, the label index or the renderer, taking every other key down with it.
        (
            keys.block_key("10.0.1.0/26"),
            {"cidr": "10.0.1.0/26", "affinity": "host:n1"},
            {"cidr": "10.0.1.300/26", "affinity": "host:n1"},
        ),
        (keys.block_key("10.0.1.0/26"), {"cidr": "10.0.1.0/26"}, {"cidr": "10.0.1.0/b/c"}),
        (keys.block_key("10.0.1.0/26"), {"cidr": "10.0.1.0/26"}, {"cidr": "::1"}),
        (keys.block_key("10.0.1.0/26"), {"affinity": "host:n1"}, {"cidr": "10.0.2.0/26"}),
        (
            keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0"),
            GOOD_WEP,
            {**GOOD_WEP, "labels": {"app": {"nested": 1}}},
        ),
        (
            keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0"),
            GOOD_WEP,
            {**GOOD_WEP, "profile_ids": [True]},
        ),
        (
            keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0"),
            GOOD_WEP,
            {**GOOD_WEP, "ipv4_nets": ["10.0.1.5/40"]},
        ),
        (
            keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0"),
            GOOD_WEP,
            {**GOOD_WEP, "ports": [{"name": "http", "protocol": "TCP", "port": "80"}]},
        ),
        (
            keys.resource_key("nodes", "n1"),
            {"spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}}},
            {"spec": {"bgp": {"ipv4Address": "10.0.0/24"}}},
        ),
        (
            keys.policy_key("NetworkPolicy", "ns", "p"),
            {"inbound_rules": [{"action": "allow", "src_nets": ["10.0.0.0/8"]}]},
            {"inbound_rules": [{"action": "allow", "src_nets": ["10.0.0.0/8", 7]}]},
        ),
        (
            keys.policy_key("NetworkPolicy", "ns", "p"),
            {"selector": "app == 'a'", "order": 10},
            {"selector": {"app": "a"}, "order": 10},
        ),
        (keys.network_set_key("g"), {"nets": ["1.2.3.0/24"]}, {"nets": "1.2.3.0/24"}),
    ],
)
def test_values_of_the_wrong_form_are_deletions(key: str, good: dict, bad: dict) -> None:
    assert parse_update(key, good).value is not None  # the same key with a good value parses
    assert parse_update(key, bad).value is None


def test_a_bad_value_only_removes_its_own_key() -> None:
    """In the engine: a workload whose value turns bad loses its rules (as if deleted); its
    neighbour on the same node keeps them, and rendering goes on."""
    engine = CalcEngine("n1")
    first = keys.workload_endpoint_key("n1", "k8s", "ns/p1", "eth0")
    second = keys.workload_endpoint_key("n1", "k8s", "ns/p2", "eth0")
    engine.apply_updates(
        [
            (first, {**GOOD_WEP, "name": "cali1"}),
            (second, {**GOOD_WEP, "name": "cali2", "ipv4_nets": ["10.0.1.6/32"]}),
        ]
    )
    engine.snapshot_done()
    engine.flush()
    files = render_files(engine.state())
    assert "cali1" in str(files) and "cali2" in str(files)
    engine.apply_updates([(first, {**GOOD_WEP, "name": "cali1", "labels": {"app": [1]}})])
    engine.flush()
    files = render_files(engine.state())
    assert "cali1" not in str(files) and "cali2" in str(files)


# --- Against the converter's real output ------------------------------------------------------

convert = pytest.importorskip("typha.sync.convert")


def k8s_objects():
    def ns(name, labels=None):
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}},
        }

    def pod(name, namespace, node, ip, labels, ports=()):
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": name},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "default",
                "containers": [{"name": "c", "ports": list(ports)}],
            },
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }

    return [
        ns("np-demo"),
        ns("myproject", {"project": "myproject"}),
        ns("other"),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "np-demo"},
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "node-1",
                "annotations": {"projectcalico.org/IPv4Address": "192.168.1.11/24"},
            },
            "spec": {},
        },
        pod("db", "np-demo", "node-1", "10.0.1.5", {"role": "db"}),
        pod("fe", "np-demo", "node-2", "10.0.2.6", {"role": "frontend"}),
        pod("mp", "myproject", "node-2", "10.0.2.7", {"app": "x"}),
        pod("stranger", "other", "node-2", "10.0.2.8", {"role": "frontend"}),
        db_network_policy(),
    ]


def test_k8s_network_policy_example_through_the_converter() -> None:
    kvs = []
    for obj in k8s_objects():
        kvs += [(u.key, u.value) for u in convert.k8s_to_updates(obj)]
    engine = CalcEngine("node-1")
    engine.apply_updates(kvs)
    engine.flush()
    state = engine.state()
    files = render_files(state)
    sim = IptablesSim(files["iptables-filter"], IpsetSim(files["ipsets"]))
    model = engine.model
    db = next(w for w in model.weps.values() if w.host == "node-1")
    cases = {
        ("10.0.2.6", 6379): Action.ALLOW,  # podSelector frontend, same namespace
        ("10.0.2.7", 6379): Action.ALLOW,  # namespace labelled project=myproject
        ("10.0.2.8", 6379): Action.DENY,  # frontend label but another namespace
        ("172.17.3.3", 6379): Action.ALLOW,  # ipBlock
        ("172.17.1.3", 6379): Action.DENY,  # ipBlock except
        ("10.0.2.6", 6380): Action.DENY,
    }
    for (src, port), expected in cases.items():
        packet = Packet(src, "10.0.1.5", 6, 40000, port)
        assert verdict(model, db, INGRESS, packet) is expected, (src, port)
        assert simulate(sim, db.iface, INGRESS, packet) is expected, (src, port)
    rng = random.Random(0)
    for _ in range(200):
        packet = Packet(
            rng.choice(["10.0.2.6", "10.0.2.7", "10.0.2.8", "172.17.1.1", "172.17.9.9"]),
            "10.0.1.5",
            rng.choice([6, 17]),
            1,
            rng.choice([6379, 5978, 80]),
        )
        assert simulate(sim, db.iface, INGRESS, packet) is verdict(model, db, INGRESS, packet)


def test_rules_with_libcalico_go_negation_names_from_the_converter() -> None:
    """typha's converter writes libcalico-go's `!`-prefixed names (what a Go client reads); the
    node client parses them into the same negations as the older `not_*` spelling."""
    from felix_client.calc.model.values import parse_rule
    from typha.sync.convert.rules import convert_rule

    v3 = {
        "action": "Allow",
        "protocol": "TCP",
        "notProtocol": "UDP",
        "source": {"notNets": ["10.0.5.0/24"], "notSelector": "app == 'evil'"},
        "destination": {"notPorts": [22]},
    }
    converted = convert_rule(v3, "", "rule")
    assert {"!protocol", "!src_nets", "!src_selector", "!dst_ports"} <= set(converted)
    rule = parse_rule(converted)
    assert rule.not_protocol == parse_rule({"protocol": "udp"}).protocol
    assert rule.not_src_nets == ("10.0.5.0/24",)
    assert rule.not_src_selector == "app == 'evil'"
    assert len(rule.not_dst_ports) == 1
    old = parse_rule({"action": "allow", "not_src_nets": ["10.0.5.0/24"]})
    assert old.not_src_nets == rule.not_src_nets
