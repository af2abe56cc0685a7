"""Random small clusters and packets for the cross-check and incremental tests."""

from __future__ import annotations

import random
from typing import Any

from felix_client.calc import synthetic as s
from tests.calc.verdict import Packet

LOCAL = "node-1"
NODES = ("node-1", "node-2", "node-3")
LABEL_KEYS = ("app", "role", "tier")
LABEL_VALUES = ("a", "b", "c")
NAMESPACES = ("ns1", "ns2")
CIDRS = (
    "10.0.0.0/8",
    "10.0.1.0/24",
    "10.0.2.0/26",
    "10.0.1.5/32",
    "172.16.0.0/16",
    "192.168.7.0/24",
    "0.0.0.0/0",
)
V6_CIDRS = ("fd00::/64",)
SELECTORS = (
    "all()",
    "app == 'a'",
    "app != 'a'",
    "has(role)",
    "!has(role)",
    "app in {'a', 'b'}",
    "app not in {'b'}",
    "role == 'b' || tier == 'c'",
    "app == 'a' && role == 'b'",
    "app starts with 'a'",
    "tier ends with 'c'",
    "app contains 'b'",
    "pcns.team == 'x'",
    "projectcalico.org/namespace == 'ns2'",
    "kind == 'net'",
    "has(app) && !(role == 'a' || tier == 'b')",
)
PORT_CHOICES: tuple[Any, ...] = (22, 53, 80, 443, 6379, 8080, "1000:2000", "http", "dns", "metrics")


def rand_labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(LABEL_VALUES) for k in LABEL_KEYS if rng.random() < 0.6}


def rand_ports(rng: random.Random) -> list[Any]:
    n = rng.choice((0, 0, 1, 2, 3, 17))
    if n == 17:
        # Long lists exercise the multiport chunking (15 slots, ranges count twice).
        return [1000 + i * 3 for i in range(12)] + ["2000:2005", "3000:3005", 53, "http"]
    return [rng.choice(PORT_CHOICES) for _ in range(n)]


def rand_rule(rng: random.Random) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "action": rng.choice(("Allow", "Allow", "Deny", "Pass", "Log", "allow"))
    }
    proto = rng.choice((None, None, "TCP", "tcp", "UDP", 17, "ICMP", "SCTP", "6"))
    if proto is not None:
        rule["protocol"] = proto
    if rng.random() < 0.1:
        rule["not_protocol"] = rng.choice(("TCP", "UDP", "ICMP"))
    if rng.random() < 0.05:
        rule["ip_version"] = rng.choice((4, 6))
    for side in ("src", "dst"):
        if rng.random() < 0.3:
            nets = rng.sample(CIDRS, rng.choice((1, 1, 2, 3)))
            if rng.random() < 0.1:
                nets.append(V6_CIDRS[0])
            rule[f"{side}_nets"] = nets
        if rng.random() < 0.2:
            rule[f"not_{side}_nets"] = rng.sample(CIDRS, rng.choice((1, 2)))
        if rng.random() < 0.35:
            rule[f"{side}_selector"] = rng.choice(SELECTORS)
        if rng.random() < 0.15:
            rule[f"not_{side}_selector"] = rng.choice(SELECTORS)
        if rng.random() < 0.4 and (proto is not None or rng.random() < 0.3):
            rule[f"{side}_ports"] = rand_ports(rng)
        if rng.random() < 0.15 and (proto is not None or rng.random() < 0.3):
            rule[f"not_{side}_ports"] = rand_ports(rng)[:3]
    if proto == "ICMP" or rng.random() < 0.05:
        if rng.random() < 0.5:
            rule["icmp_type"] = rng.choice((0, 8))
            if rng.random() < 0.5:
                rule["icmp_code"] = rng.choice((0, 1))
        if rng.random() < 0.3:
            rule["not_icmp_type"] = rng.choice((0, 8))
            if rng.random() < 0.5:
                rule["not_icmp_code"] = rng.choice((0, 1))
    return rule


def rand_wep(rng: random.Random, index: int, node: str | None = None) -> tuple[str, Any]:
    ns = rng.choice(NAMESPACES)
    ports = []
    if rng.random() < 0.5:
        ports.append({"name": "http", "protocol": "TCP", "port": rng.choice((80, 8080))})
    if rng.random() < 0.3:
        ports.append({"name": "dns", "protocol": "UDP", "port": 53})
    if rng.random() < 0.2:
        ports.append({"name": "metrics", "protocol": "SCTP", "port": 9100})
    block = rng.choice((1, 2, 3))
    return s.wep(
        node or rng.choice((LOCAL, LOCAL, "node-2", "node-3")),
        ns,
        f"pod{index}",
        f"10.0.{block}.{index + 2}",
        rand_labels(rng),
        sa=rng.choice(("default", "admin", None)),
        ports=ports,
        state="active" if rng.random() < 0.93 else "down",
    )


def rand_policy(rng: random.Random, index: int) -> tuple[str, Any]:
    kind = rng.choice(
        ("NetworkPolicy", "GlobalNetworkPolicy", "KubernetesNetworkPolicy", "StagedNetworkPolicy")
    )
    ns = "" if kind == "GlobalNetworkPolicy" else rng.choice(NAMESPACES)
    types = rng.choice(
        ((), ("ingress",), ("egress",), ("ingress", "egress"), ("Ingress", "Egress"))
    )
    return s.policy(
        kind,
        ns,
        f"pol{index}",
        rng.choice(SELECTORS),
        tier=rng.choice(("default", "default", "t1", "t2", "ghost")),
        order=rng.choice((None, 1, 5, 5, 10.5)),
        inbound=[rand_rule(rng) for _ in range(rng.choice((0, 1, 2, 3)))],
        outbound=[rand_rule(rng) for _ in range(rng.choice((0, 1, 2)))],
        types=types,
    )


def rand_cluster(rng: random.Random, n_weps: int = 8, n_policies: int = 5) -> list[tuple[str, Any]]:
    kvs: list[tuple[str, Any]] = []
    kvs.append(s.tier("default", rng.choice((1_000_000, None))))
    kvs.append(s.tier("t1", 10, rng.choice(("Deny", "Pass"))))
    if rng.random() < 0.7:
        kvs.append(s.tier("t2", rng.choice((None, 10, 20)), rng.choice(("Deny", "Pass"))))
    for ns in NAMESPACES:
        rules = s.namespace_profiles(ns, {"team": rng.choice(("x", "y"))})
        if rng.random() < 0.3:
            # A namespace profile that is not allow-all.
            rules[0] = (
                rules[0][0],
                {"inbound_rules": [rand_rule(rng)], "outbound_rules": [rand_rule(rng)]},
            )
        kvs += rules
        kvs += s.service_account_profiles(ns, "default")
        if rng.random() < 0.5:
            kvs += s.service_account_profiles(ns, "admin")
    kvs.append(s.pool("10.0.0.0/16", ipip=rng.choice(("Always", "CrossSubnet", "Never")), nat=True))
    for i, node in enumerate(NODES):
        kvs.append(s.node(node, f"192.168.{1 if i < 2 else 2}.{11 + i}/24"))
        kvs.append(s.block(f"10.0.{i + 1}.0/26", node))
    for i in range(rng.randrange(0, 3)):
        kvs.append(
            s.network_set(
                f"ns1/netset{i}",
                rng.sample(("172.16.5.0/24", "192.168.7.0/25", "10.0.9.0/24"), 2),
                {"kind": "net", **rand_labels(rng)},
            )
        )
    for i in range(n_weps):
        kvs.append(rand_wep(rng, i))
    for i in range(n_policies):
        kvs.append(rand_policy(rng, i))
    return kvs


EXTERNAL_IPS = ("172.16.5.9", "192.168.7.3", "8.8.8.8", "10.0.9.77", "10.0.1.5")


def rand_packet(rng: random.Random, ips: list[str], own_ip: str, ingress: bool) -> Packet:
    other = rng.choice(ips + list(EXTERNAL_IPS))
    proto = rng.choice((6, 6, 17, 17, 1, 132, 4))
    sport = dport = icmp_type = icmp_code = None
    if proto in (6, 17, 132):
        sport = rng.choice((53, 80, 1003, 2003, 40000, 8080, 9100))
        dport = rng.choice((22, 53, 80, 443, 1500, 2004, 3001, 6379, 8080, 4789, 9100, 1033))
    elif proto == 1:
        icmp_type = rng.choice((0, 8, 3))
        icmp_code = rng.choice((0, 1))
    src, dst = (other, own_ip) if ingress else (own_ip, other)
    return Packet(src, dst, proto, sport, dport, icmp_type, icmp_code)
