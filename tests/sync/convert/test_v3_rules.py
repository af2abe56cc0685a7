"""v3 rules → the model's rule fields: entities, selectors, ICMP, service accounts, validation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync.convert.helpers import one, res
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- rules ----------------------------------------------------------------------------------------


def rule_of(rule: dict[str, Any], namespace: str = "ns1", direction: str = "ingress"):
    kind = "NetworkPolicy" if namespace else "GlobalNetworkPolicy"
    policy = res(kind, "p", {direction: [rule]}, namespace=namespace)
    value = one(policy).value
    return value["inbound_rules" if direction == "ingress" else "outbound_rules"][0]


def test_rule_schema_all_fields_in_order() -> None:
    rule = rule_of(
        {
            "action": "Pass",
            "ipVersion": 4,
            "protocol": "UDP",
            "notProtocol": 17,
            "source": {
                "nets": ["10.0.0.1", "10.1.2.3/16"],
                "notNets": ["10.0.5.0/24"],
                "selector": "app == 'a'",
                "notSelector": "app == 'evil'",
                "ports": [53, "1000:2000", "dns", "7:7", "99"],
                "notPorts": [54],
            },
            "destination": {
                "nets": ["192.168.0.0/16"],
                "namespaceSelector": "team == 'x'",
                "notPorts": ["metrics"],
                "services": {"name": "kube-dns", "namespace": "kube-system"},
            },
            "http": {"methods": ["GET"], "paths": [{"exact": "/x"}, {"prefix": "/y"}]},
        }
    )
    assert rule == {
        "action": "next-tier",
        "ip_version": 4,
        "protocol": "udp",
        "!protocol": 17,
        "src_nets": ["10.0.0.1/32", "10.1.0.0/16"],
        "src_selector": "(projectcalico.org/namespace == 'ns1') && (app == 'a')",
        "src_ports": [53, "1000:2000", "dns", 7, 99],
        "dst_nets": ["192.168.0.0/16"],
        "dst_selector": 'pcns.team == "x"',  # printed as libcalico-go prints it
        "dst_service": "kube-dns",
        "dst_service_ns": "kube-system",
        "!src_nets": ["10.0.5.0/24"],
        "!src_selector": "app == 'evil'",
        "!src_ports": [54],
        "!dst_ports": ["metrics"],
        "orig_src_selector": "app == 'a'",
        "orig_dst_namespace_selector": "team == 'x'",
        "!orig_src_selector": "app == 'evil'",
        "http": {"methods": ["GET"], "paths": [{"exact": "/x"}, {"prefix": "/y"}]},
    }
    # libcalico-go's JSON names: a Go client drops any key it does not know.
    assert list(rule) == [
        "action", "ip_version", "protocol", "!protocol", "src_nets", "src_selector",
        "src_ports", "dst_nets", "dst_selector", "dst_service", "dst_service_ns",
        "!src_nets", "!src_selector", "!src_ports", "!dst_ports", "orig_src_selector",
        "orig_dst_namespace_selector", "!orig_src_selector", "http",
    ]  # fmt: skip


def test_rule_service_accounts_and_metadata_pass_through() -> None:
    rule = rule_of(
        {
            "action": "Allow",
            "source": {"serviceAccounts": {"names": ["sa1"], "selector": "role == 'x'"}},
            "metadata": {"annotations": {"b": "2", "a": "1"}},
        }
    )
    assert rule["orig_src_service_acct_names"] == ["sa1"]
    assert rule["orig_src_service_acct_selector"] == "role == 'x'"
    assert rule["metadata"] == {"annotations": {"a": "1", "b": "2"}}
    # The service namespace is passed as given, never defaulted to the policy's namespace.
    svc = rule_of({"action": "Allow", "destination": {"services": {"name": "web"}}})
    assert svc == {"action": "allow", "dst_service": "web"}


@pytest.mark.parametrize(
    ("action", "expected"),
    [("Allow", "allow"), ("Deny", "deny"), ("Log", "log"), ("Pass", "next-tier")],
)
def test_rule_actions(action: str, expected: str) -> None:
    assert rule_of({"action": action}) == {"action": expected}


def test_icmp_fields() -> None:
    rule = rule_of(
        {
            "action": "Allow",
            "protocol": "ICMP",
            "icmp": {"type": 8, "code": 0},
            "notICMP": {"type": 0},
        }
    )
    assert rule == {
        "action": "allow",
        "protocol": "icmp",
        "icmp_type": 8,
        "icmp_code": 0,
        "!icmp_type": 0,
    }


def test_nets_only_entity_gets_no_selector_even_in_namespaced_policy() -> None:
    rule = rule_of({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}})
    assert rule == {"action": "allow", "src_nets": ["10.0.0.0/8"]}


def test_not_selector_only_scopes_positive_selector_to_namespace() -> None:
    rule = rule_of({"action": "Allow", "source": {"notSelector": "a == 'b'"}})
    assert rule == {
        "action": "allow",
        "src_selector": "projectcalico.org/namespace == 'ns1'",
        "!src_selector": "a == 'b'",
        "!orig_src_selector": "a == 'b'",
    }


def test_namespace_selector_all_and_global() -> None:
    assert (
        rule_of({"action": "Allow", "source": {"namespaceSelector": "all()"}})["src_selector"]
        == "has(projectcalico.org/namespace)"
    )
    assert (
        rule_of({"action": "Allow", "source": {"namespaceSelector": "global()"}}, namespace="")[
            "src_selector"
        ]
        == "!has(projectcalico.org/namespace)"
    )
    sel = rule_of(
        {"action": "Allow", "source": {"namespaceSelector": "a == 'x'", "selector": "b == 'y'"}}
    )["src_selector"]
    assert sel == "(pcns.a == \"x\") && (b == 'y')"


def test_service_account_match() -> None:
    rule = rule_of(
        {
            "action": "Allow",
            "source": {
                "selector": "app == 'web'",
                "serviceAccounts": {"names": ["sa2", "sa1", "sa2"], "selector": "team == 'x'"},
            },
        }
    )
    # Service accounts before the selector, sets sorted without repeats (libcalico-go's form).
    assert rule["src_selector"] == (
        "(projectcalico.org/namespace == 'ns1') && "
        '(((pcsa.team == "x") && (projectcalico.org/serviceaccount in {"sa1", "sa2"}))'
        " && (app == 'web'))"
    )
    only_names = rule_of(
        {"action": "Allow", "destination": {"serviceAccounts": {"names": ["a"]}}}, namespace=""
    )
    assert only_names["dst_selector"] == 'projectcalico.org/serviceaccount in {"a"}'


def test_or_selectors_are_parenthesised_before_anding() -> None:
    rule = rule_of({"action": "Allow", "source": {"selector": "a == 'x' || b == 'y'"}})
    assert rule["src_selector"] == (
        "(projectcalico.org/namespace == 'ns1') && (a == 'x' || b == 'y')"
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "Accept"}, r"spec\.ingress\[0\]\.action: action must be"),
        ({}, r"spec\.ingress\[0\]\.action"),
        ({"action": "Allow", "destination": {"ports": [80]}}, "only valid with protocol"),
        ({"action": "Allow", "protocol": "ICMP", "destination": {"ports": [80]}}, "TCP, UDP"),
        ({"action": "Allow", "icmp": {"type": 8}}, "ICMP or ICMPv6"),
        ({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}}, "needs an ICMP type"),
        ({"action": "Allow", "protocol": "bogus"}, "unknown protocol"),
        ({"action": "Allow", "protocol": 300}, "1-255"),
        ({"action": "Allow", "ipVersion": 5}, "4 or 6"),
        ({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}, "ipVersion 6"),
        ({"action": "Allow", "source": {"nets": ["10.0.0.300/24"]}}, r"source\.nets\[0\]"),
        ({"action": "Allow", "source": {"nets": "10.0.0.0/8"}}, "expected a list"),
        ({"action": "Allow", "protocol": "TCP", "source": {"ports": ["90:80"]}}, "min > max"),
        ({"action": "Allow", "protocol": "TCP", "source": {"ports": [70000]}}, "0-65535"),
        ({"action": "Allow", "protocol": "TCP", "source": {"ports": [True]}}, "expected a port"),
        ({"action": "Allow", "source": {"selector": "(a == 'b'"}}, "unbalanced"),
        ({"action": "Allow", "source": {"selector": "a == 'b"}}, "unterminated string"),
        ({"action": "Allow", "source": {"selector": "a = 'b'"}}, "unexpected character"),
        ({"action": "Allow", "source": {"selector": "a in {'b'"}}, "unterminated set"),
        ({"action": "Allow", "source": {"selector": "a == 'b' &&"}}, "ends with an operator"),
        ({"action": "Allow", "source": {"selector": "foo(a)"}}, "unknown function"),
        ({"action": "Allow", "source": {"selector": 5}}, "expected a string"),
        ({"action": "Allow", "http": {"paths": [{"regex": "x"}]}}, "exact/prefix"),
    ],
)
def test_invalid_rules(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message) as err:
        rule_of(rule)
    assert str(err.value).startswith("NetworkPolicy ns1/p: ")


def test_invalid_policy_top_level() -> None:
    with pytest.raises(InvalidResource, match=r"spec\.ingress: expected a list"):
        v3_to_updates(res("GlobalNetworkPolicy", "g", {"ingress": {"action": "Allow"}}))
    with pytest.raises(InvalidResource, match=r"spec\.selector: unbalanced"):
        v3_to_updates(res("GlobalNetworkPolicy", "g", {"selector": "has(a"}))
    with pytest.raises(InvalidResource, match=r"spec\.order: expected a number"):
        v3_to_updates(res("GlobalNetworkPolicy", "g", {"order": "10"}))
    with pytest.raises(InvalidResource, match=r"spec\.types\[0\]"):
        v3_to_updates(res("GlobalNetworkPolicy", "g", {"types": ["Sideways"]}))
