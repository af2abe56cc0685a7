"""Kubernetes NetworkPolicy → v3 KubernetesNetworkPolicy → Policy keys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.seed_examples import db_network_policy
from typha.sync.convert import (
    InvalidResource,
    k8s_to_updates,
    network_policy_to_v3,
)

# --- NetworkPolicy --------------------------------------------------------------------------------

DB_NETWORK_POLICY: dict[str, Any] = db_network_policy(resourceVersion="42")


def test_db_network_policy_seed_example_v3() -> None:
    """The worked example of docs/model.md ("Kubernetes datastore mapping"): the intermediate
    v3 policy."""
    v3 = network_policy_to_v3(DB_NETWORK_POLICY)
    assert v3 == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "KubernetesNetworkPolicy",
        "metadata": {"name": "db-network-policy", "namespace": "np-demo"},
        "spec": {
            "tier": "default",
            "order": 1000.0,
            "selector": "projectcalico.org/orchestrator == 'k8s' && role == 'db'",
            "types": ["Ingress", "Egress"],
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"nets": ["172.17.0.0/16"], "notNets": ["172.17.1.0/24"]},
                    "destination": {"ports": [6379]},
                },
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {
                        "selector": "projectcalico.org/orchestrator == 'k8s'",
                        "namespaceSelector": "project == 'myproject'",
                    },
                    "destination": {"ports": [6379]},
                },
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {
                        "selector": "projectcalico.org/orchestrator == 'k8s' && role == 'frontend'"
                    },
                    "destination": {"ports": [6379]},
                },
            ],
            "egress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "destination": {"nets": ["10.0.0.0/24"], "ports": [5978]},
                }
            ],
        },
    }


def test_db_network_policy_seed_example_model_field_by_field() -> None:
    (update,) = k8s_to_updates(DB_NETWORK_POLICY)
    assert update.key == "/calico/v1/policy/KubernetesNetworkPolicy/np-demo/db-network-policy"
    v = update.value
    assert v["namespace"] == "np-demo"
    assert v["tier"] == "default"
    assert v["order"] == 1000.0
    assert v["selector"] == (
        "(projectcalico.org/orchestrator == 'k8s' && role == 'db') && "
        "projectcalico.org/namespace == 'np-demo'"
    )
    assert v["types"] == ["ingress", "egress"]
    assert v["untracked"] is False and v["pre_dnat"] is False and v["apply_on_forward"] is False
    ip_block, ns_peer, pod_peer = v["inbound_rules"]
    # ipBlock: nets/not_nets, no selector at all (any endpoint in that CIDR).
    assert ip_block == {
        "action": "allow",
        "protocol": "tcp",
        "src_nets": ["172.17.0.0/16"],
        "dst_ports": [6379],
        "!src_nets": ["172.17.1.0/24"],
    }
    # namespaceSelector: pcns.-prefixed, every pod in the namespaces that match (a Kubernetes
    # peer always selects pods: the orchestrator term, as Calico converts it).
    assert ns_peer == {
        "action": "allow",
        "protocol": "tcp",
        "src_selector": (
            "(pcns.project == \"myproject\") && (projectcalico.org/orchestrator == 'k8s')"
        ),
        "dst_ports": [6379],
        "orig_src_selector": "projectcalico.org/orchestrator == 'k8s'",
        "orig_src_namespace_selector": "project == 'myproject'",
    }
    # podSelector alone: the policy's own namespace is implied.
    assert pod_peer == {
        "action": "allow",
        "protocol": "tcp",
        "src_selector": (
            "(projectcalico.org/namespace == 'np-demo') && "
            "(projectcalico.org/orchestrator == 'k8s' && role == 'frontend')"
        ),
        "dst_ports": [6379],
        "orig_src_selector": "projectcalico.org/orchestrator == 'k8s' && role == 'frontend'",
    }
    assert v["outbound_rules"] == [
        {"action": "allow", "protocol": "tcp", "dst_nets": ["10.0.0.0/24"], "dst_ports": [5978]}
    ]


def knp(spec: dict[str, Any], name: str = "p", namespace: str = "ns1") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def model_of(policy: dict[str, Any]) -> dict[str, Any]:
    (update,) = k8s_to_updates(policy)
    return update.value


def test_knp_without_policy_types_is_ingress_only() -> None:
    v = model_of(
        knp({"podSelector": {}, "ingress": [{}], "egress": [{"to": [{"podSelector": {}}]}]})
    )
    assert v["types"] == ["ingress"]
    assert v["inbound_rules"] == [{"action": "allow"}]
    assert v["outbound_rules"] == []
    assert v["selector"] == (
        "(projectcalico.org/orchestrator == 'k8s') && projectcalico.org/namespace == 'ns1'"
    )


def test_knp_deny_all_ingress_and_egress() -> None:
    v = model_of(knp({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    assert v["types"] == ["ingress", "egress"]
    assert v["inbound_rules"] == [] and v["outbound_rules"] == []


def test_knp_empty_namespace_selector_means_all_namespaces() -> None:
    v = model_of(knp({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert v["inbound_rules"] == [
        {
            "action": "allow",
            "src_selector": (
                "(has(projectcalico.org/namespace)) && (projectcalico.org/orchestrator == 'k8s')"
            ),
            "orig_src_selector": "projectcalico.org/orchestrator == 'k8s'",
            "orig_src_namespace_selector": "all()",
        }
    ]


def test_knp_pod_and_namespace_selector_together() -> None:
    v = model_of(
        knp(
            {
                "podSelector": {},
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "a"}},
                                "podSelector": {"matchLabels": {"app": "x"}},
                            }
                        ]
                    }
                ],
                "policyTypes": ["Egress"],
            }
        )
    )
    assert v["outbound_rules"] == [
        {
            "action": "allow",
            "dst_selector": (
                "(pcns.team == \"a\") && (projectcalico.org/orchestrator == 'k8s' && app == 'x')"
            ),
            "orig_dst_selector": "projectcalico.org/orchestrator == 'k8s' && app == 'x'",
            "orig_dst_namespace_selector": "team == 'a'",
        }
    ]


MATCH_EXPRESSIONS_SPEC: dict[str, Any] = {
    "podSelector": {
        "matchLabels": {"z": "1", "a": "2"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "tier", "operator": "NotIn", "values": ["cache"]},
            {"key": "owner", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
}


def test_knp_match_expressions() -> None:
    expected = (
        "projectcalico.org/orchestrator == 'k8s' && a == '2' && z == '1' && "
        "env in { 'prod', 'staging' } && tier not in { 'cache' } && has(owner) && ! has(legacy)"
    )
    assert network_policy_to_v3(knp(MATCH_EXPRESSIONS_SPEC))["spec"]["selector"] == expected
    model = model_of(knp(MATCH_EXPRESSIONS_SPEC))
    assert model["selector"] == f"({expected}) && projectcalico.org/namespace == 'ns1'"


PORTS_SPEC: dict[str, Any] = {
    "podSelector": {},
    "ingress": [
        {
            "ports": [
                {"port": 82},
                {"protocol": "TCP", "port": 80},
                {"protocol": "TCP", "port": "81"},
                {"protocol": "TCP", "port": "http"},
                {"protocol": "UDP", "port": 53},
                {"protocol": "TCP", "port": 1000, "endPort": 2000},
                {"protocol": "TCP", "port": 1500},
                {"protocol": "SCTP"},
            ]
        }
    ],
}


def test_knp_ports_squash_ranges_named_and_protocols() -> None:
    v3 = network_policy_to_v3(knp(PORTS_SPEC))
    assert v3["spec"]["ingress"] == [
        {
            "action": "Allow",
            "protocol": "TCP",
            "destination": {"ports": ["80:82", "1000:2000", "http"]},
        },
        {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
        {"action": "Allow", "protocol": "SCTP"},
    ]
    assert model_of(knp(PORTS_SPEC))["inbound_rules"] == [
        {"action": "allow", "protocol": "tcp", "dst_ports": ["80:82", "1000:2000", "http"]},
        {"action": "allow", "protocol": "udp", "dst_ports": [53]},
        {"action": "allow", "protocol": "sctp"},
    ]


def test_knp_empty_port_struct_means_any_protocol() -> None:
    v3 = network_policy_to_v3(knp({"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {}]}]}))
    assert v3["spec"]["ingress"] == [{"action": "Allow"}]


def test_knp_peers_times_protocols() -> None:
    v3 = network_policy_to_v3(
        knp(
            {
                "podSelector": {},
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"podSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": 1}, {"protocol": "UDP", "port": 2}],
                    }
                ],
                "policyTypes": ["Egress"],
            }
        )
    )
    pod = "projectcalico.org/orchestrator == 'k8s'"
    assert v3["spec"]["egress"] == [
        {
            "action": "Allow",
            "protocol": "TCP",
            "destination": {"nets": ["10.0.0.0/8"], "ports": [1]},
        },
        {
            "action": "Allow",
            "protocol": "UDP",
            "destination": {"nets": ["10.0.0.0/8"], "ports": [2]},
        },
        {"action": "Allow", "protocol": "TCP", "destination": {"selector": pod, "ports": [1]}},
        {"action": "Allow", "protocol": "UDP", "destination": {"selector": pod, "ports": [2]}},
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, r"spec\.podSelector: required"),
        ({"podSelector": {}, "policyTypes": ["Both"]}, r"policyTypes\[0\]"),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            "ipBlock cannot be combined",
        ),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "a peer needs"),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "bad"}}]}]},
            r"ipBlock\.cidr",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
                }
            },
            "operator must be",
        ),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "needs values"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "TCP, UDP or SCTP"),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            "bad port range",
        ),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "endPort"),
    ],
)
def test_knp_invalid(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        k8s_to_updates(knp(spec))
