"""v3 policies (the six kinds) → Policy keys: selectors, types, staged kinds, validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.sync.convert.helpers import ALLOW_6379, one, res
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- policies -------------------------------------------------------------------------------------


def test_namespaced_network_policy_seed_example() -> None:
    update = one(ALLOW_6379)
    assert update.key == "/calico/v1/policy/NetworkPolicy/myproject/allow-tcp-6379"
    assert update.value == {
        "namespace": "myproject",
        "tier": "default",
        "order": None,
        "inbound_rules": [
            {
                "action": "allow",
                "protocol": "tcp",
                "src_selector": (
                    "(projectcalico.org/namespace == 'myproject') && (app == 'frontend')"
                ),
                "dst_ports": [6379],
                "orig_src_selector": "app == 'frontend'",
            }
        ],
        "outbound_rules": [{"action": "allow"}],
        "selector": "(app == 'database') && projectcalico.org/namespace == 'myproject'",
        "untracked": False,
        "pre_dnat": False,
        "apply_on_forward": False,
        "types": ["ingress", "egress"],
        "performance_hints": [],
    }
    # Fixed field order (the cache dedupes by encoded bytes).
    assert list(update.value) == [
        "namespace", "tier", "order", "inbound_rules", "outbound_rules", "selector",
        "untracked", "pre_dnat", "apply_on_forward", "types", "performance_hints",
    ]  # fmt: skip


def test_global_policy_same_rules_are_not_namespace_scoped() -> None:
    gnp = copy.deepcopy(ALLOW_6379)
    gnp["kind"] = "GlobalNetworkPolicy"
    del gnp["metadata"]["namespace"]
    gnp["spec"]["order"] = 100
    update = one(gnp)
    assert update.key == "/calico/v1/policy/GlobalNetworkPolicy//allow-tcp-6379"
    assert update.value["namespace"] == ""
    assert update.value["order"] == 100.0 and isinstance(update.value["order"], float)
    assert update.value["selector"] == "app == 'database'"
    assert update.value["inbound_rules"][0]["src_selector"] == "app == 'frontend'"


def test_empty_selector_stays_empty_and_namespaced_empty_selector_is_namespace_term() -> None:
    # As Calico Typha: "" (Felix reads an empty selector as all()).
    assert one(res("GlobalNetworkPolicy", "p")).value["selector"] == ""
    np_ = one(res("NetworkPolicy", "p", namespace="ns1"))
    assert np_.value["selector"] == "projectcalico.org/namespace == 'ns1'"


def test_gnp_namespace_selector_and_service_account_selector() -> None:
    update = one(
        res(
            "GlobalNetworkPolicy",
            "g",
            {
                "selector": "all()",
                "namespaceSelector": "team == 'a' || team in {'b'}",
                "serviceAccountSelector": "role == 'x' || all()",
            },
        )
    )
    assert update.value["selector"] == (
        '((has(projectcalico.org/namespace)) && (pcns.team == "a" || pcns.team in {"b"}))'
        ' && (pcsa.role == "x" || has(projectcalico.org/serviceaccount))'
    )


def test_gnp_namespace_selector_all_means_any_namespaced_endpoint() -> None:
    update = one(res("GlobalNetworkPolicy", "g", {"namespaceSelector": "all()"}))
    assert update.value["selector"] == "has(projectcalico.org/namespace)"


def test_namespace_selector_printed_like_libcalico_go() -> None:
    """Calico parses the namespaceSelector, prefixes its labels, prints it back (compound
    expressions in parentheses, values in double quotes) and then replaces every all() in the
    text, even inside a string literal: we do exactly the same, quirk included."""
    update = one(
        res("GlobalNetworkPolicy", "g", {"namespaceSelector": "name == 'all()' && has(x)"})
    )
    assert update.value["selector"] == (
        '(pcns.name == "has(projectcalico.org/namespace)" && has(pcns.x))'
    )
    odd = one(res("GlobalNetworkPolicy", "g", {"namespaceSelector": "((a == 'x\"y'))"}))
    assert odd.value["selector"] == "pcns.a == 'x\"y'"


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, []),
        ({"ingress": [{"action": "Allow"}]}, []),
        ({"egress": [{"action": "Allow"}]}, []),
        ({"ingress": [{"action": "Deny"}], "egress": [{"action": "Allow"}]}, []),
        ({"types": ["Egress", "Ingress"]}, ["egress", "ingress"]),
        ({"types": ["Egress"], "ingress": [{"action": "Allow"}]}, ["egress"]),
    ],
)
def test_policy_types_as_given(spec: dict[str, Any], types: list[str]) -> None:
    """Types pass through as given, like Calico Typha: the v3 API defaults them when a client
    writes the policy, and Felix reads none as "ingress and egress"."""
    assert one(res("GlobalNetworkPolicy", "p", spec)).value["types"] == types


@pytest.mark.parametrize(
    ("kind", "namespace", "path_kind"),
    [
        ("StagedNetworkPolicy", "ns1", "StagedNetworkPolicy"),
        ("StagedGlobalNetworkPolicy", "", "StagedGlobalNetworkPolicy"),
    ],
)
def test_staged_policies_carry_staged_action(kind: str, namespace: str, path_kind: str) -> None:
    update = one(res(kind, "s", {"stagedAction": "Learn"}, namespace=namespace))
    assert update.key == f"/calico/v1/policy/{path_kind}/{namespace}/s"
    assert update.value["staged_action"] == "Learn"
    # As Calico Typha: unset is absent (not "Set"), and a staged Delete is not sent at all.
    assert "staged_action" not in one(res(kind, "s", namespace=namespace)).value
    assert one(res(kind, "s", {"stagedAction": "Delete"}, namespace=namespace)).value is None
    assert "staged_action" not in one(res("NetworkPolicy", "n", namespace="ns1")).value


def test_staged_kubernetes_network_policy_uses_knp_translation() -> None:
    update = one(
        res(
            "StagedKubernetesNetworkPolicy",
            "sk",
            {"stagedAction": "Set", "podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]},
            namespace="ns1",
        )
    )
    assert update.key == "/calico/v1/policy/StagedKubernetesNetworkPolicy/ns1/sk"
    assert update.value["tier"] == "default" and update.value["order"] == 1000.0
    assert update.value["selector"] == (
        "(projectcalico.org/orchestrator == 'k8s' && app == 'db') && "
        "projectcalico.org/namespace == 'ns1'"
    )
    assert update.value["inbound_rules"] == [{"action": "allow"}]
    assert update.value["staged_action"] == "Set"


def test_kubernetes_network_policy_v3_shaped() -> None:
    update = one(
        res(
            "KubernetesNetworkPolicy",
            "k",
            {"tier": "default", "order": 1000, "selector": "a == 'b'", "types": ["Ingress"]},
            namespace="ns1",
        )
    )
    assert update.key == "/calico/v1/policy/KubernetesNetworkPolicy/ns1/k"
    assert update.value["selector"] == "(a == 'b') && projectcalico.org/namespace == 'ns1'"


def test_untracked_prednat_validation() -> None:
    ok = one(res("GlobalNetworkPolicy", "g", {"doNotTrack": True, "applyOnForward": True})).value
    assert ok["untracked"] is True and ok["apply_on_forward"] is True
    with pytest.raises(InvalidResource, match="applyOnForward"):
        v3_to_updates(res("GlobalNetworkPolicy", "g", {"preDNAT": True}))
    with pytest.raises(InvalidResource, match="cannot both"):
        v3_to_updates(
            res(
                "GlobalNetworkPolicy",
                "g",
                {"preDNAT": True, "doNotTrack": True, "applyOnForward": True},
            )
        )
    with pytest.raises(InvalidResource, match="egress"):
        v3_to_updates(
            res(
                "GlobalNetworkPolicy",
                "g",
                {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]},
            )
        )
    with pytest.raises(InvalidResource, match="only valid on global"):
        v3_to_updates(res("NetworkPolicy", "n", {"preDNAT": True}, namespace="ns"))
