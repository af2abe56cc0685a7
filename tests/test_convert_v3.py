"""projectcalico.org/v3 resources and etcd keys → model key updates."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from typha.model import keys
from typha.sync.base import ResourceExpander, Update
from typha.sync.convert import (
    CALICO_ETCD_PREFIXES,
    CALICO_ETCD_WATCH_PREFIX,
    InvalidResource,
    convert_etcd_kv,
    etcd_key_for,
    etcd_value_for,
    is_calico_etcd_key,
    split_workload_endpoint_name,
    v3_to_updates,
    workload_endpoint_name,
)

V3 = "projectcalico.org/v3"


def res(kind: str, name: str, spec: dict[str, Any] | None = None, namespace: str = "", **meta: Any):
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": V3, "kind": kind, "metadata": metadata, "spec": spec or {}}


def one(resource: dict[str, Any]) -> Update:
    updates = v3_to_updates(resource)
    assert len(updates) == 1, updates
    return updates[0]


def as_map(updates: list[Update]) -> dict[str, Any]:
    return {u.key: u.value for u in updates}


def packed(updates: list[Update]) -> list[tuple[str, bytes]]:
    return [(u.key, msgpack.packb(u.value)) for u in updates]


# --- policies -------------------------------------------------------------------------------------

ALLOW_6379 = res(
    "NetworkPolicy",
    "allow-tcp-6379",
    {
        "selector": "app == 'database'",
        "types": ["Ingress", "Egress"],
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'frontend'"},
                "destination": {"ports": [6379]},
            }
        ],
        "egress": [{"action": "Allow"}],
    },
    namespace="myproject",
)


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


# --- generic validation ---------------------------------------------------------------------------


def test_missing_name_namespace_kind_and_api_version() -> None:
    with pytest.raises(InvalidResource, match=r"metadata\.name: required"):
        v3_to_updates({"apiVersion": V3, "kind": "Tier", "metadata": {}, "spec": {}})
    with pytest.raises(InvalidResource, match=r"metadata\.namespace: required"):
        v3_to_updates(res("NetworkPolicy", "p"))
    with pytest.raises(InvalidResource, match="unknown kind 'Widget'"):
        v3_to_updates(res("Widget", "w"))
    with pytest.raises(InvalidResource, match="apiVersion"):
        v3_to_updates({**res("Tier", "t"), "apiVersion": "v1"})
    with pytest.raises(InvalidResource, match="expected a mapping"):
        v3_to_updates({**res("Tier", "t"), "spec": ["x"]})
    with pytest.raises(InvalidResource, match="expected a mapping"):
        v3_to_updates("Tier")  # type: ignore[arg-type]


def test_input_is_not_modified() -> None:
    policy = copy.deepcopy(ALLOW_6379)
    v3_to_updates(policy)
    assert policy == ALLOW_6379


# --- tiers and profiles ---------------------------------------------------------------------------


def test_tiers() -> None:
    assert one(res("Tier", "default")) == Update(
        "/calico/v1/policy/tier/default/metadata", {"order": 1_000_000.0, "defaultAction": "Deny"}
    )
    assert one(res("Tier", "kube-admin")).value == {"order": 1000.0, "defaultAction": "Pass"}
    assert one(res("Tier", "security", {"order": 10, "defaultAction": "Pass"})).value == {
        "order": 10.0,
        "defaultAction": "Pass",
    }
    assert one(res("Tier", "other")).value == {"order": None, "defaultAction": "Deny"}
    with pytest.raises(InvalidResource, match="defaultAction"):
        v3_to_updates(res("Tier", "x", {"defaultAction": "Allow"}))


def test_profile_rules_and_labels() -> None:
    updates = v3_to_updates(
        res(
            "Profile",
            "kns.web",
            {
                "ingress": [{"action": "Allow"}],
                "egress": [{"action": "Allow", "destination": {"selector": "a == 'b'"}}],
                "labelsToApply": {"pcns.z": "1", "pcns.projectcalico.org/name": "web"},
            },
        )
    )
    assert updates[:2] == [
        Update(
            "/calico/v1/policy/profile/kns.web/rules",
            {
                "inbound_rules": [{"action": "allow"}],
                "outbound_rules": [
                    {"action": "allow", "dst_selector": "a == 'b'", "orig_dst_selector": "a == 'b'"}
                ],
            },
        ),
        Update(
            "/calico/v1/policy/profile/kns.web/labels",
            {"pcns.projectcalico.org/name": "web", "pcns.z": "1"},
        ),
    ]
    assert list(updates[1].value) == ["pcns.projectcalico.org/name", "pcns.z"]
    assert updates[2].key == "/calico/resources/v3/projectcalico.org/profiles/kns.web"
    assert updates[2].value["spec"]["labelsToApply"]["pcns.z"] == "1"
    assert keys.syncer_types_for(updates[2].key) == {keys.SyncerType.FELIX}


# --- workload endpoints ---------------------------------------------------------------------------

WEP = res(
    "WorkloadEndpoint",
    "node--1-k8s-nginx--abc-eth0",
    {
        "orchestrator": "k8s",
        "node": "node-1",
        "pod": "nginx-abc",
        "endpoint": "eth0",
        "containerID": "c0ffee",
        "serviceAccountName": "default",
        "ipNetworks": ["192.168.162.146/32", "fd00::5/128"],
        "ipNATs": [{"internalIP": "192.168.162.146", "externalIP": "172.16.0.5"}],
        "profiles": ["kns.web", "ksa.web.default"],
        "interfaceName": "cali0123456789a",
        "mac": "EE:EE:EE:EE:EE:01",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "", "protocol": "UDP", "port": 53, "hostPort": 5353},
        ],
    },
    namespace="web",
    labels={"app": "nginx", "pcns.spoof": "x", "pcsa.spoof": "y"},
    annotations={"b": "2", "a": "1"},
    generateName="nginx-",
)


def test_workload_endpoint() -> None:
    update = one(WEP)
    assert update.key == "/calico/v1/host/node-1/workload/k8s/web%2fnginx-abc/endpoint/eth0"
    assert update.value == {
        "state": "active",
        "name": "cali0123456789a",
        "active_instance_id": "",  # as Calico Typha: never the container ID
        "mac": "ee:ee:ee:ee:ee:01",
        "profile_ids": ["kns.web", "ksa.web.default"],
        "ipv4_nets": ["192.168.162.146/32"],
        "ipv6_nets": ["fd00::5/128"],
        "ipv4_nat": [{"int_ip": "192.168.162.146", "ext_ip": "172.16.0.5"}],
        "ipv6_nat": [],
        "labels": {
            "app": "nginx",
            "projectcalico.org/namespace": "web",
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "default",
        },
        "ipv4_gateway": None,
        "ipv6_gateway": None,
        "ports": [{"name": "http", "protocol": "tcp", "port": 80}],
        "generate_name": "nginx-",
        "allow_spoofed_source_ips": [],
        "annotations": {"a": "1", "b": "2"},
    }


def test_workload_endpoint_identity_from_name_only() -> None:
    wep = copy.deepcopy(WEP)
    for f in ("orchestrator", "node", "pod", "endpoint"):
        del wep["spec"][f]
    assert one(wep).key == one(WEP).key
    assert one(wep).value["labels"]["projectcalico.org/orchestrator"] == "k8s"


def test_workload_endpoint_non_k8s_orchestrator() -> None:
    wep = res(
        "WorkloadEndpoint",
        "host1-openstack-vm--1-tap0",
        {"ipNetworks": ["10.1.0.5/32"], "interfaceName": "tap0"},
        namespace="tenant",
    )
    update = one(wep)
    assert update.key == "/calico/v1/host/host1/workload/openstack/vm-1/endpoint/tap0"
    assert update.value["labels"] == {
        "projectcalico.org/namespace": "tenant",
        "projectcalico.org/orchestrator": "openstack",
    }


def test_workload_endpoint_without_ips_is_a_deletion() -> None:
    wep = copy.deepcopy(WEP)
    wep["spec"]["ipNetworks"] = []
    assert v3_to_updates(wep) == [Update(one(WEP).key, None)]


def test_workload_endpoint_invalid() -> None:
    bad = copy.deepcopy(WEP)
    bad["spec"]["ipNetworks"] = ["192.168.1.5/24"]
    with pytest.raises(InvalidResource, match=r"spec\.ipNetworks\[0\].*host bits"):
        v3_to_updates(bad)
    bad = res(
        "WorkloadEndpoint", "just-three-parts", {"ipNetworks": ["10.0.0.1/32"]}, namespace="n"
    )
    with pytest.raises(InvalidResource, match=r"metadata\.name"):
        v3_to_updates(bad)
    bad = copy.deepcopy(WEP)
    bad["spec"]["mac"] = "not-a-mac"
    with pytest.raises(InvalidResource, match=r"spec\.mac"):
        v3_to_updates(bad)
    bad = copy.deepcopy(WEP)
    bad["metadata"]["labels"] = {"app": 5}
    with pytest.raises(InvalidResource, match=r"metadata\.labels"):
        v3_to_updates(bad)


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("node1", "k8s", "nginx", "eth0"), "node1-k8s-nginx-eth0"),
        (("node-1", "k8s", "nginx-7c5d-2dv4k", "eth0"), "node--1-k8s-nginx--7c5d--2dv4k-eth0"),
        (
            ("ip-10-0-0-1.ec2.internal", "k8s", "a--b", "eth0"),
            "ip--10--0--0--1.ec2.internal-k8s-a----b-eth0",
        ),
    ],
)
def test_workload_endpoint_name_escaping(parts: tuple[str, str, str, str], name: str) -> None:
    assert workload_endpoint_name(*parts) == name
    assert split_workload_endpoint_name(name) == parts


_PART = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)


@given(_PART, _PART, _PART, _PART)
def test_workload_endpoint_name_roundtrip(node: str, orch: str, pod: str, ep: str) -> None:
    assert split_workload_endpoint_name(workload_endpoint_name(node, orch, pod, ep)) == (
        node, orch, pod, ep,
    )  # fmt: skip


# --- host endpoints, network sets -----------------------------------------------------------------


def test_host_endpoint() -> None:
    update = one(
        res(
            "HostEndpoint",
            "node1-eth0",
            {
                "node": "node1",
                "interfaceName": "eth0",
                "expectedIPs": ["10.0.0.11", "fd00::11"],
                "profiles": ["projectcalico-default-allow"],
                "ports": [{"name": "ssh", "protocol": "TCP", "port": 22}],
            },
            labels={"role": "k8s-node"},
        )
    )
    assert update == Update(
        "/calico/v1/host/node1/endpoint/node1-eth0",
        {
            "name": "eth0",
            "expected_ipv4_addrs": ["10.0.0.11"],
            "expected_ipv6_addrs": ["fd00::11"],
            "labels": {"role": "k8s-node"},
            "profile_ids": ["projectcalico-default-allow"],
            "ports": [{"name": "ssh", "protocol": "tcp", "port": 22}],
        },
    )
    with pytest.raises(InvalidResource, match=r"spec\.node: required"):
        v3_to_updates(res("HostEndpoint", "h", {"interfaceName": "eth0"}))
    with pytest.raises(InvalidResource, match="interfaceName or expectedIPs"):
        v3_to_updates(res("HostEndpoint", "h", {"node": "n"}))


def test_network_sets() -> None:
    gns = one(
        res("GlobalNetworkSet", "dns", {"nets": ["8.8.8.8", "1.1.1.0/24"]}, labels={"k": "v"})
    )
    assert gns == Update(
        "/calico/v1/netset/dns",
        {"nets": ["8.8.8.8/32", "1.1.1.0/24"], "labels": {"k": "v"}, "profile_ids": []},
    )
    ns = one(
        res(
            "NetworkSet",
            "office",
            {"nets": ["203.0.113.0/24"]},
            namespace="web",
            labels={"k": "v", "pcns.x": "spoof"},
        )
    )
    assert ns == Update(
        "/calico/v1/netset/web%2foffice",
        {
            "nets": ["203.0.113.0/24"],
            "labels": {"k": "v", "projectcalico.org/namespace": "web"},
            "profile_ids": ["kns.web"],
        },
    )
    with pytest.raises(InvalidResource, match=r"spec\.nets\[0\]"):
        v3_to_updates(res("GlobalNetworkSet", "x", {"nets": ["nope"]}))


# --- IPAM -----------------------------------------------------------------------------------------


def test_ip_pool() -> None:
    update = one(
        res(
            "IPPool",
            "default-ipv4-ippool",
            {"cidr": "192.168.0.0/16", "ipipMode": "CrossSubnet", "natOutgoing": True},
        )
    )
    assert update == Update(
        "/calico/v1/ipam/v4/pool/192.168.0.0-16",
        {
            "cidr": "192.168.0.0/16",
            "ipip": "tunl0",
            "ipip_mode": "cross-subnet",
            "vxlan_mode": "",
            "masquerade": True,
            "ipam": True,
            "disabled": False,
            "disableBGPExport": False,
            "assignment_mode": "Automatic",
        },
    )
    # libcalico-go's spelling: "never" is "", and allowedUses passes through only when given.
    uses = one(res("IPPool", "lb", {"cidr": "10.9.0.0/16", "allowedUses": ["LoadBalancer"]}))
    assert uses.value["allowed_uses"] == ["LoadBalancer"] and uses.value["ipip_mode"] == ""
    v6 = one(res("IPPool", "v6", {"cidr": "fd00:10::/48", "vxlanMode": "Always", "disabled": True}))
    assert v6.key == "/calico/v1/ipam/v6/pool/fd00:10::-48"
    assert v6.value["vxlan_mode"] == "always" and v6.value["ipip"] == ""
    assert v6.value["ipam"] is False and v6.value["disabled"] is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, r"spec\.cidr: required"),
        ({"cidr": "192.168.0.0/33"}, "is not a CIDR"),
        ({"cidr": "10.0.0.0/8", "ipipMode": "Always", "vxlanMode": "Always"}, "both"),
        ({"cidr": "10.0.0.0/8", "ipipMode": "Sometimes"}, "ipipMode"),
        ({"cidr": "10.0.0.0/8", "blockSize": 40}, "blockSize"),
        ({"cidr": "10.0.0.0/24", "blockSize": 20}, "bigger than the pool"),
        ({"cidr": "10.0.0.0/8", "natOutgoing": "yes"}, "expected a boolean"),
    ],
)
def test_ip_pool_invalid(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        v3_to_updates(res("IPPool", "p", spec))


def test_ipam_block_and_affinity() -> None:
    allocations: list[int | None] = [None] * 64
    allocations[0] = 0
    block = res(
        "IPAMBlock",
        "10-0-1-0-26",
        {
            "cidr": "10.0.1.0/26",
            "affinity": "host:node1",
            "allocations": allocations,
            "unallocated": list(range(1, 64)),
            "attributes": [{"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1"}}],
        },
    )
    update = one(block)
    assert update.key == "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    assert update.value == {
        "cidr": "10.0.1.0/26",
        "affinity": "host:node1",
        "strictAffinity": False,
        "allocations": allocations,
        "unallocated": list(range(1, 64)),
        "attributes": [{"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1"}}],
        "deleted": False,
        "sequenceNumber": 0,
        "sequenceNumberForAllocation": None,  # absent in the spec: null, as Go's nil map
    }
    with_seq = {**block["spec"], "sequenceNumberForAllocation": {"0": 3}}
    assert one(res("IPAMBlock", "b", with_seq)).value["sequenceNumberForAllocation"] == {"0": 3}
    affinity = res(
        "BlockAffinity",
        "node1-10-0-1-0-26",
        {"state": "confirmed", "node": "node1", "cidr": "10.0.1.0/26", "deleted": "false"},
    )
    assert one(affinity) == Update(
        "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26",
        {"state": "confirmed", "deleted": False},
    )
    with pytest.raises(InvalidResource, match="64 entries"):
        v3_to_updates(res("IPAMBlock", "b", {"cidr": "10.0.1.0/26", "allocations": [None]}))
    with pytest.raises(InvalidResource, match=r"spec\.state"):
        v3_to_updates(res("BlockAffinity", "a", {"node": "n", "cidr": "10.0.0.0/26", "state": "x"}))


# --- nodes and configuration ----------------------------------------------------------------------

NODE = res(
    "Node",
    "node1",
    {
        "bgp": {"ipv4Address": "10.0.0.11/24", "ipv4IPIPTunnelAddr": "192.168.162.128"},
        "ipv4VXLANTunnelAddr": "192.168.162.129",
        "vxlanTunnelMACAddr": "66:AA:BB:CC:DD:EE",
        "wireguard": {"interfaceIPv4Address": "192.168.162.130"},
    },
    resourceVersion="1234",
    uid="u-1",
)
NODE["status"] = {"wireguardPublicKey": "pubkey="}


def test_node() -> None:
    updates = v3_to_updates(NODE)
    assert [u.key for u in updates] == [
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    values = as_map(updates)
    assert values["/calico/v1/host/node1/config/IpInIpTunnelAddr"] == "192.168.162.128"
    assert values["/calico/v1/host/node1/config/VXLANTunnelMACAddr"] == "66:aa:bb:cc:dd:ee"
    # No host metadata key: Calico Typha never sends /calico/v1/host/<node>/metadata.
    assert "/calico/v1/host/node1/metadata" not in values
    assert values["/calico/v1/host/node1/wireguard"] == {
        "interfaceIPv4Addr": "192.168.162.130",
        "publicKey": "pubkey=",
        "interfaceIPv6Addr": "",
        "publicKeyV6": "",
    }
    passthrough = values["/calico/resources/v3/projectcalico.org/nodes/node1"]
    assert passthrough["metadata"] == {"name": "node1", "uid": "u-1"}  # resourceVersion dropped
    assert passthrough["spec"]["bgp"]["ipv4Address"] == "10.0.0.11/24"


def test_node_minimal_and_expander_deletes_dropped_keys() -> None:
    minimal = res("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.11/24"}})
    assert [u.key for u in v3_to_updates(minimal)] == [
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    expander = ResourceExpander()
    expander.expand("nodes/node1", v3_to_updates(NODE))
    out = expander.expand("nodes/node1", v3_to_updates(minimal))
    deleted = sorted(u.key for u in out if u.value is None)
    assert deleted == [
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
    ]


def test_node_invalid() -> None:
    with pytest.raises(InvalidResource, match=r"spec\.bgp\.ipv4Address"):
        v3_to_updates(res("Node", "n", {"bgp": {"ipv4Address": "10.0.0.300/24"}}))
    with pytest.raises(InvalidResource, match=r"spec\.bgp\.ipv4IPIPTunnelAddr"):
        v3_to_updates(res("Node", "n", {"bgp": {"ipv4IPIPTunnelAddr": "x"}}))


def test_felix_configuration_default_is_global_config() -> None:
    updates = v3_to_updates(
        res(
            "FelixConfiguration",
            "default",
            {
                "logSeverityScreen": "Info",
                "ipipEnabled": True,
                "ipipMTU": 1440,
                "reportingInterval": "0s",
                "iptablesRefreshInterval": "1m30s",
                "routeRefreshInterval": "100ms",
                "failsafeInboundHostPorts": [
                    {"protocol": "TCP", "port": 22},
                    {"protocol": "UDP", "port": 68, "net": "0.0.0.0/0"},
                ],
                "failsafeOutboundHostPorts": [],
                "routeTableRange": {"min": 1, "max": 250},
                "externalNodesCIDRList": ["10.0.0.0/8", "192.168.0.0/16"],
                "healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "90s"}],
                "ipv6Support": False,
                "unsetField": None,
            },
        )
    )
    assert as_map(updates) == {
        "/calico/v1/config/LogSeverityScreen": "Info",
        "/calico/v1/config/IpInIpEnabled": "true",
        "/calico/v1/config/IpInIpMtu": "1440",
        "/calico/v1/config/ReportingIntervalSecs": "0",
        "/calico/v1/config/IptablesRefreshInterval": "90",
        "/calico/v1/config/RouteRefreshInterval": "0.1",
        "/calico/v1/config/FailsafeInboundHostPorts": "tcp:22,udp:0.0.0.0/0:68",
        "/calico/v1/config/FailsafeOutboundHostPorts": "none",
        "/calico/v1/config/RouteTableRange": "1-250",
        "/calico/v1/config/ExternalNodesCIDRList": "10.0.0.0/8,192.168.0.0/16",
        "/calico/v1/config/HealthTimeoutOverrides": "InternalDataplaneMainLoop=90",
        "/calico/v1/config/Ipv6Support": "false",
    }
    keys_in_order = [u.key for u in updates]
    assert keys_in_order == sorted(keys_in_order)


def test_felix_configuration_names_follow_libcalico_go() -> None:
    """Config keys are named after Calico's Go fields (acronyms upper-case), as Calico Typha
    sends them; the one millisecond duration is in milliseconds."""
    spec = {
        "bpfEnabled": False,
        "nftablesMode": "Disabled",
        "nftablesFlowTableOffload": "Enabled",
        "vxlanEnabled": True,
        "wireguardKeepAlive": "25s",
        "iptablesLockProbeInterval": "50ms",
        "nodeSelector": "all()",
    }
    assert as_map(v3_to_updates(res("FelixConfiguration", "default", spec))) == {
        "/calico/v1/config/BPFEnabled": "false",
        "/calico/v1/config/NFTablesMode": "Disabled",
        "/calico/v1/config/NFTablesFlowTableOffload": "Enabled",
        "/calico/v1/config/VXLANEnabled": "true",
        "/calico/v1/config/WireguardPersistentKeepAlive": "25",
        "/calico/v1/config/IptablesLockProbeIntervalMillis": "50",
    }


def test_felix_configuration_node_and_other_names() -> None:
    updates = v3_to_updates(res("FelixConfiguration", "node.node1", {"logSeverityScreen": "Debug"}))
    assert updates == [Update("/calico/v1/host/node1/config/LogSeverityScreen", "Debug")]
    other = v3_to_updates(res("FelixConfiguration", "some-selector-scoped", {"bpfEnabled": True}))
    assert [u.key for u in other] == [
        "/calico/resources/v3/projectcalico.org/felixconfigurations/some-selector-scoped"
    ]


def test_cluster_information() -> None:
    updates = v3_to_updates(
        res(
            "ClusterInformation",
            "default",
            {
                "clusterGUID": "abc",
                "clusterType": "typha,k8s",
                "calicoVersion": "v3.32.1",
                "datastoreReady": True,
            },
        )
    )
    assert updates == [
        Update("/calico/v1/config/ClusterGUID", "abc"),
        Update("/calico/v1/config/ClusterType", "typha,k8s"),
        Update("/calico/v1/config/CalicoVersion", "v3.32.1"),
        Update("/calico/v1/Ready", True),
    ]
    assert v3_to_updates(res("ClusterInformation", "default", {"datastoreReady": False})) == [
        Update("/calico/v1/Ready", False)
    ]
    assert v3_to_updates(res("ClusterInformation", "other", {"datastoreReady": True})) == []


@pytest.mark.parametrize(
    ("kind", "plural", "namespace"),
    [
        ("BGPConfiguration", "bgpconfigurations", ""),
        ("BGPPeer", "bgppeers", ""),
        ("BGPFilter", "BGPFilters", ""),
        ("CalicoNodeStatus", "caliconodestatuses", ""),
        ("LiveMigration", "livemigrations", ""),
    ],
)
def test_passthrough_kinds(kind: str, plural: str, namespace: str) -> None:
    resource = res(kind, "x", {"b": 1, "a": 2}, namespace=namespace, resourceVersion="7")
    update = one(resource)
    assert update.key == f"/calico/resources/v3/projectcalico.org/{plural}/x"
    assert update.value == {
        "apiVersion": V3,
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {"a": 2, "b": 1},
    }
    assert list(update.value["spec"]) == ["a", "b"]
    assert keys.classify(update.key) is keys.KeyKind.RESOURCE


@pytest.mark.parametrize(
    "kind", ["IPReservation", "KubeControllersConfiguration", "IPAMConfiguration", "IPAMConfig"]
)
def test_kinds_not_for_felix(kind: str) -> None:
    assert v3_to_updates(res(kind, "default", {"x": 1})) == []


# --- determinism ----------------------------------------------------------------------------------


def test_determinism_same_input_same_bytes() -> None:
    for resource in (ALLOW_6379, WEP, NODE):
        assert packed(v3_to_updates(resource)) == packed(v3_to_updates(copy.deepcopy(resource)))


def test_label_order_does_not_change_bytes() -> None:
    reordered = copy.deepcopy(WEP)
    reordered["metadata"]["labels"] = dict(reversed(list(WEP["metadata"]["labels"].items())))
    reordered["metadata"]["annotations"] = {"a": "1", "b": "2"}
    assert packed(v3_to_updates(reordered)) == packed(v3_to_updates(WEP))
    node = copy.deepcopy(NODE)
    node["spec"] = dict(reversed(list(NODE["spec"].items())))
    assert packed(v3_to_updates(node)) == packed(v3_to_updates(NODE))


def test_every_produced_key_classifies() -> None:
    for resource in (ALLOW_6379, WEP, NODE, res("Tier", "t"), res("Profile", "p")):
        for update in v3_to_updates(resource):
            assert keys.classify(update.key) is not keys.KeyKind.UNKNOWN


# --- etcd -----------------------------------------------------------------------------------------


def test_etcd_prefixes_and_filter() -> None:
    assert CALICO_ETCD_WATCH_PREFIX == "/calico/"
    assert all(p.startswith(CALICO_ETCD_WATCH_PREFIX) for p in CALICO_ETCD_PREFIXES)
    assert is_calico_etcd_key("/calico/resources/v3/projectcalico.org/tiers/default")
    assert is_calico_etcd_key("/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26")
    assert is_calico_etcd_key("/calico/ipam/v2/host/node1/ipv4/block/10.0.0.0-26")
    assert not is_calico_etcd_key("/calico/ipam/v2/handle/k8s-pod-network.abc")
    assert not is_calico_etcd_key("/calico/felix/v2/status/node1")


def test_convert_etcd_kv_v3_resource() -> None:
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/myproject/allow-tcp-6379"
    assert etcd_key_for(ALLOW_6379) == key
    value = etcd_value_for(ALLOW_6379)
    assert convert_etcd_kv(key, value) == v3_to_updates(ALLOW_6379)
    # kind and apiVersion come from the key when the stored object lacks them
    bare = {k: v for k, v in value.items() if k not in ("kind", "apiVersion")}
    assert convert_etcd_kv(key, bare) == v3_to_updates(ALLOW_6379)


def test_convert_etcd_kv_rejects_mismatches() -> None:
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/myproject/other-name"
    with pytest.raises(InvalidResource, match=r"metadata\.name"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/otherns/allow-tcp-6379"
    with pytest.raises(InvalidResource, match=r"metadata\.namespace"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    key = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/allow-tcp-6379"
    with pytest.raises(InvalidResource, match="does not match the key"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    with pytest.raises(InvalidResource, match="unknown resource plural"):
        convert_etcd_kv("/calico/resources/v3/projectcalico.org/widgets/x", {})
    with pytest.raises(InvalidResource, match="<namespace>/<name>"):
        convert_etcd_kv("/calico/resources/v3/projectcalico.org/networkpolicies/x", {})


def test_convert_etcd_kv_ipam_and_others() -> None:
    block_key = "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    block = {"cidr": "10.0.1.0/26", "affinity": "host:node1", "allocations": [None] * 64}
    (update,) = convert_etcd_kv(block_key, block)
    assert update.key == block_key
    assert {k: update.value[k] for k in block} == block  # the rest is filled in with defaults
    assert update.value["unallocated"] == [] and update.value["deleted"] is False
    # Checked like the IPAMBlock spec: a broken block never reaches the node clients.
    for bad, message in [
        ({**block, "cidr": "10.0.1.0/33"}, "cidr"),
        ({**block, "cidr": "10.0.2.0/26"}, "does not match the key"),
        ({**block, "allocations": [None] * 3}, "64 entries"),
        ({**block, "affinity": 7}, "affinity"),
        # Found by atheris: msgpack cannot carry it, and the feed would have failed encoding it.
        ({**block, "allocations": [3 * 10**95] + [None] * 63}, "allocations"),
        ({**block, "allocations": [0] + [None] * 63}, "must index spec.attributes"),
        ({**block, "sequenceNumber": 2**64}, "out of range"),
    ]:
        with pytest.raises(InvalidResource, match=message) as err:
            convert_etcd_kv(block_key, bad)
        assert err.value.resource == block_key
    with pytest.raises(InvalidResource, match="state"):
        convert_etcd_kv("/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26", {"state": "weird"})
    aff_key = "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26"
    assert convert_etcd_kv(aff_key, {"state": "confirmed", "deleted": False}) == [
        Update(aff_key, {"state": "confirmed", "deleted": False})
    ]
    assert convert_etcd_kv("/calico/ipam/v2/handle/k8s-pod-network.abc", {"block": {}}) == []
    assert convert_etcd_kv("/calico/ipam/v2/config", {"strictAffinity": False}) == []
    assert convert_etcd_kv("/calico/felix/v2/whatever", {}) == []
    assert convert_etcd_kv("/calico/ipam/v2/assignment/ipv4/block", {}) == []


def test_etcd_key_for_ipam_objects_uses_v1_paths() -> None:
    block = res("IPAMBlock", "10-0-1-0-26", {"cidr": "10.0.1.0/26", "affinity": "host:node1"})
    assert etcd_key_for(block) == "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    assert etcd_value_for(block)["affinity"] == "host:node1"
    assert convert_etcd_kv(etcd_key_for(block), etcd_value_for(block)) == v3_to_updates(block)
    affinity = res(
        "BlockAffinity",
        "node1-10-0-1-0-26",
        {"state": "confirmed", "node": "node1", "cidr": "10.0.1.0/26"},
    )
    assert etcd_key_for(affinity) == "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26"
    assert etcd_value_for(affinity) == {"state": "confirmed", "deleted": False}


def test_etcd_key_for_kinds() -> None:
    assert (
        etcd_key_for(res("BGPFilter", "f")) == "/calico/resources/v3/projectcalico.org/BGPFilters/f"
    )
    assert etcd_key_for(WEP) == (
        "/calico/resources/v3/projectcalico.org/workloadendpoints/web/node--1-k8s-nginx--abc-eth0"
    )
    value = etcd_value_for({**NODE})
    assert "resourceVersion" not in value["metadata"]
    with pytest.raises(InvalidResource, match="unknown kind"):
        etcd_key_for(res("Widget", "w"))
    with pytest.raises(InvalidResource, match="namespace"):
        etcd_key_for(res("NetworkPolicy", "p"))


def test_passed_on_objects_refuse_integers_msgpack_cannot_carry() -> None:
    """Found by the converter fuzzer: a Node (passed on whole) with a 65-bit integer
    anywhere in it converted, and only the feed's encoding failed."""
    node = res("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}})
    assert v3_to_updates(node)  # the control
    node["spec"]["addresses"] = [{"address": "10.0.0.1", "type": 2**64}]
    with pytest.raises(InvalidResource, match="out of range"):
        v3_to_updates(node)
    node["spec"]["addresses"] = [{"address": "10.0.0.1", "type": 2**64 - 1}]  # uint64 fits
    assert v3_to_updates(node)


def test_no_labels_is_null_like_go_and_empty_labels_stay_empty() -> None:
    """A HostEndpoint or global NetworkSet without labels: Calico Typha sends null (Go's nil
    map), with an empty map {}; a Kubernetes apiserver drops empty maps, so there it is null."""
    hep = res("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0"})
    assert one(hep).value["labels"] is None
    hep["metadata"]["labels"] = {}
    assert one(hep).value["labels"] == {}
    gns = res("GlobalNetworkSet", "g", {"nets": ["192.0.2.0/24"]})
    assert one(gns).value["labels"] is None
    gns["metadata"]["labels"] = {"a": "b"}
    assert one(gns).value["labels"] == {"a": "b"}
