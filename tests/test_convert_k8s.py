"""Kubernetes datastore objects → v3 resources → model key updates."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from tests.seed_examples import db_network_policy
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    crd_to_v3,
    k8s_interface_name,
    k8s_to_updates,
    namespace_to_profile,
    network_policy_to_v3,
    node_to_v3,
    pod_to_updates,
    pod_to_workload_endpoint,
    pod_workload_endpoint_key,
    service_account_to_profile,
    v3_to_updates,
)
from typha.sync.convert.k8s import derived_uid


def packed(updates: list[Update]) -> list[tuple[str, bytes]]:
    return [(u.key, msgpack.packb(u.value)) for u in updates]


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


# --- Pods -----------------------------------------------------------------------------------------

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "nginx-1",
        "namespace": "web",
        "generateName": "nginx-",
        "uid": "0d7c3e1a",
        "resourceVersion": "1000",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"app": "nginx", "pcns.projectcalico.org/name": "spoofed"},
        "annotations": {
            "cni.projectcalico.org/podIP": "192.168.162.146/32",
            "cni.projectcalico.org/podIPs": "192.168.162.146/32",
            "cni.projectcalico.org/containerID": "c0ffee",
            "qos.projectcalico.org/ingressBandwidth": "10M",
            "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
        },
        "managedFields": [{"manager": "kubelet", "operation": "Update"}],
    },
    "spec": {
        "nodeName": "node-1",
        "serviceAccountName": "default",
        "containers": [
            {
                "name": "nginx",
                "ports": [
                    {"name": "http", "containerPort": 80, "protocol": "TCP"},
                    {"containerPort": 8080},
                    {"containerPort": 9000, "hostPort": 9000, "protocol": "UDP"},
                ],
            }
        ],
        "initContainers": [{"name": "init", "ports": [{"name": "metrics", "containerPort": 9100}]}],
    },
    "status": {
        "phase": "Running",
        "podIP": "192.168.162.146",
        "podIPs": [{"ip": "192.168.162.146"}],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}
        ],
        "containerStatuses": [{"name": "nginx", "ready": True, "restartCount": 0}],
        "startTime": "2026-01-01T00:00:01Z",
    },
}

POD_KEY = "/calico/v1/host/node-1/workload/k8s/web%2fnginx-1/endpoint/eth0"


def test_pod_to_workload_endpoint_v3() -> None:
    wep = pod_to_workload_endpoint(POD)
    assert wep == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": "node--1-k8s-nginx--1-eth0",
            "namespace": "web",
            "generateName": "nginx-",
            "labels": {
                "app": "nginx",
                "projectcalico.org/namespace": "web",
                "projectcalico.org/orchestrator": "k8s",
                "projectcalico.org/serviceaccount": "default",
            },
            "annotations": {"qos.projectcalico.org/ingressBandwidth": "10M"},
        },
        "spec": {
            "orchestrator": "k8s",
            "node": "node-1",
            "pod": "nginx-1",
            "endpoint": "eth0",
            "containerID": "c0ffee",
            "serviceAccountName": "default",
            "ipNetworks": ["192.168.162.146/32"],
            "profiles": ["kns.web", "ksa.web.default"],
            "interfaceName": "calia6aa282ddc1",
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80},
                {"name": "", "protocol": "UDP", "port": 9000, "hostPort": 9000},
                {"name": "metrics", "protocol": "TCP", "port": 9100},
            ],
        },
    }


def test_pod_to_updates_model_value() -> None:
    (update,) = pod_to_updates(POD)
    assert update.key == POD_KEY == pod_workload_endpoint_key(POD)
    assert update.value == {
        "state": "active",
        "name": "calia6aa282ddc1",  # cali + sha1("web.nginx-1")[:11]
        "active_instance_id": "",  # as Calico Typha: never the container ID
        "mac": None,
        "profile_ids": ["kns.web", "ksa.web.default"],
        "ipv4_nets": ["192.168.162.146/32"],
        "ipv6_nets": None,  # Go marshals its empty (nil) list as null
        "ipv4_nat": [],
        "ipv6_nat": [],
        "labels": {
            "app": "nginx",
            "projectcalico.org/namespace": "web",
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "default",
        },
        "ipv4_gateway": None,
        "ipv6_gateway": None,
        "ports": [
            {"name": "http", "protocol": "tcp", "port": 80},
            {"name": "metrics", "protocol": "tcp", "port": 9100},
        ],
        "generate_name": "nginx-",
        "allow_spoofed_source_ips": [],
        "annotations": {"qos.projectcalico.org/ingressBandwidth": "10M"},
    }
    assert k8s_to_updates(POD) == pod_to_updates(POD)


def test_interface_name() -> None:
    assert k8s_interface_name("web", "nginx-1") == "calia6aa282ddc1"
    assert k8s_interface_name("web", "nginx-7c5ddbdf54-2dv4k") == "calia53571dc704"
    assert k8s_interface_name("web", "nginx-1", "veth") == "vetha6aa282ddc1"
    assert pod_to_workload_endpoint(POD, interface_prefix="veth")["spec"]["interfaceName"] == (
        "vetha6aa282ddc1"
    )


def mutate(pod: dict[str, Any], fn: Any) -> dict[str, Any]:
    copy_ = copy.deepcopy(pod)
    fn(copy_)
    return copy_


def test_pod_status_churn_does_not_change_output() -> None:
    """Typha's filtering: only Calico-relevant fields may change the model value."""
    baseline = packed(pod_to_updates(POD))

    def churn(p: dict[str, Any]) -> None:
        p["metadata"]["resourceVersion"] = "2000"
        p["metadata"]["managedFields"].append({"manager": "kube-controller", "operation": "Update"})
        p["metadata"]["creationTimestamp"] = "2026-02-02T00:00:00Z"
        p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2026-02-02T00:00:00Z"
        p["status"]["conditions"] = [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-02-02T00:00:00Z"},
            {"type": "ContainersReady", "status": "False"},
        ]
        p["status"]["containerStatuses"][0].update(ready=False, restartCount=7)
        p["status"]["startTime"] = "2026-02-02T00:00:00Z"
        p["status"]["hostIP"] = "10.0.0.11"
        p["status"]["qosClass"] = "BestEffort"

    assert packed(pod_to_updates(mutate(POD, churn))) == baseline
    # ...while a relevant change does change it.
    relabelled = mutate(POD, lambda p: p["metadata"]["labels"].update(app="other"))
    assert packed(pod_to_updates(relabelled)) != baseline


def test_pod_determinism_and_label_order() -> None:
    assert packed(pod_to_updates(POD)) == packed(pod_to_updates(copy.deepcopy(POD)))
    reordered = mutate(
        POD,
        lambda p: p["metadata"].update(
            labels=dict(reversed(list(p["metadata"]["labels"].items())))
        ),
    )
    assert packed(pod_to_updates(reordered)) == packed(pod_to_updates(POD))


def test_pod_input_not_modified() -> None:
    before = copy.deepcopy(POD)
    pod_to_updates(POD)
    assert before == POD


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: p["spec"].update(hostNetwork=True),
        lambda p: p["spec"].pop("nodeName"),
    ],
    ids=["host-network", "unscheduled"],
)
def test_pods_that_never_have_an_endpoint(fn: Any) -> None:
    pod = mutate(POD, fn)
    assert pod_to_updates(pod) == []
    assert pod_to_workload_endpoint(pod) is None


def _no_ips(p: dict[str, Any]) -> None:
    for a in ("cni.projectcalico.org/podIP", "cni.projectcalico.org/podIPs"):
        p["metadata"]["annotations"].pop(a)
    p["status"].pop("podIP")
    p["status"].pop("podIPs")


def _terminating_released(p: dict[str, Any]) -> None:
    p["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    p["metadata"]["annotations"]["cni.projectcalico.org/podIP"] = ""
    p["metadata"]["annotations"]["cni.projectcalico.org/podIPs"] = ""


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: p["status"].update(phase="Failed"),
        lambda p: p["status"].update(phase="Succeeded"),
        _no_ips,
        _terminating_released,
    ],
    ids=["failed", "succeeded", "no-ip", "terminating-released"],
)
def test_pods_whose_endpoint_is_deleted(fn: Any) -> None:
    pod = mutate(POD, fn)
    assert pod_to_updates(pod) == [Update(POD_KEY, None)]
    assert pod_to_workload_endpoint(pod) is None


def test_terminating_pod_without_empty_annotation_keeps_its_ip() -> None:
    pod = mutate(POD, lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T01:00:00Z"))
    assert pod_to_updates(pod) == pod_to_updates(POD)


def test_pod_ip_sources() -> None:
    def ips(pod: dict[str, Any]) -> list[str]:
        (update,) = pod_to_updates(pod)
        return (update.value["ipv4_nets"] or []) + (update.value["ipv6_nets"] or [])

    # annotation first (Calico writes it before the kubelet reports status)
    ann_first = mutate(
        POD, lambda p: p["status"].update(podIP="10.9.9.9", podIPs=[{"ip": "10.9.9.9"}])
    )
    assert ips(ann_first) == ["192.168.162.146/32"]

    def dual_stack_status(p: dict[str, Any]) -> None:
        _no_ips(p)
        p["status"]["podIPs"] = [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]

    assert ips(mutate(POD, dual_stack_status)) == ["10.0.0.5/32", "fd00::5/128"]

    def status_pod_ip_only(p: dict[str, Any]) -> None:
        _no_ips(p)
        p["status"]["podIP"] = "10.0.0.6"

    assert ips(mutate(POD, status_pod_ip_only)) == ["10.0.0.6/32"]

    def aws(p: dict[str, Any]) -> None:
        _no_ips(p)
        p["metadata"]["annotations"]["vpc.amazonaws.com/pod-ips"] = "10.1.0.7, 10.1.0.8"

    assert ips(mutate(POD, aws)) == ["10.1.0.7/32", "10.1.0.8/32"]

    def pod_ips_annotation(p: dict[str, Any]) -> None:
        p["metadata"]["annotations"]["cni.projectcalico.org/podIPs"] = "10.2.0.1/32,fd00::1/128"

    assert ips(mutate(POD, pod_ips_annotation)) == ["10.2.0.1/32", "fd00::1/128"]

    bad = mutate(
        POD, lambda p: p["metadata"]["annotations"].update({"cni.projectcalico.org/podIPs": "x"})
    )
    with pytest.raises(InvalidResource, match=r"Pod web/nginx-1: metadata\.annotations"):
        pod_to_updates(bad)


def test_pod_without_service_account_and_with_mac() -> None:
    def fn(p: dict[str, Any]) -> None:
        p["spec"].pop("serviceAccountName")
        p["metadata"]["annotations"]["cni.projectcalico.org/mac"] = "EE:EE:EE:00:00:01"

    (update,) = pod_to_updates(mutate(POD, fn))
    assert update.value["profile_ids"] == ["kns.web"]
    assert "projectcalico.org/serviceaccount" not in update.value["labels"]
    assert update.value["mac"] == "ee:ee:ee:00:00:01"


def test_pod_invalid() -> None:
    with pytest.raises(InvalidResource, match=r"metadata\.namespace"):
        pod_to_updates(mutate(POD, lambda p: p["metadata"].pop("namespace")))
    with pytest.raises(InvalidResource, match=r"spec\.containers"):
        pod_to_updates(mutate(POD, lambda p: p["spec"].update(containers={"a": 1})))


# --- Namespaces, service accounts -----------------------------------------------------------------

NAMESPACE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {
        "name": "web",
        "labels": {"team": "frontend", "kubernetes.io/metadata.name": "web"},
        "resourceVersion": "5",
        "managedFields": [],
    },
    "spec": {"finalizers": ["kubernetes"]},
    "status": {"phase": "Active"},
}


def test_namespace_to_profile() -> None:
    assert namespace_to_profile(NAMESPACE) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "kns.web"},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {
                "pcns.kubernetes.io/metadata.name": "web",
                "pcns.projectcalico.org/name": "web",
                "pcns.team": "frontend",
            },
        },
    }
    updates = k8s_to_updates(NAMESPACE)
    # The v3 Profile itself goes to the felix syncer too, as Calico Typha sends it.
    assert updates[2] == Update(
        "/calico/resources/v3/projectcalico.org/profiles/kns.web",
        namespace_to_profile(NAMESPACE),
    )
    assert updates[:2] == [
        Update(
            "/calico/v1/policy/profile/kns.web/rules",
            {"inbound_rules": [{"action": "allow"}], "outbound_rules": [{"action": "allow"}]},
        ),
        Update(
            "/calico/v1/policy/profile/kns.web/labels",
            {
                "pcns.kubernetes.io/metadata.name": "web",
                "pcns.projectcalico.org/name": "web",
                "pcns.team": "frontend",
            },
        ),
    ]
    churned = mutate(
        NAMESPACE,
        lambda n: (
            n["metadata"].update(resourceVersion="6"),
            n["status"].update(phase="Terminating"),
        ),
    )
    assert packed(k8s_to_updates(churned)) == packed(k8s_to_updates(NAMESPACE))


def test_service_account_to_profile() -> None:
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "api", "namespace": "web", "labels": {"role": "backend"}},
        "secrets": [{"name": "api-token-xyz"}],
    }
    assert service_account_to_profile(sa) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "ksa.web.api"},
        "spec": {"labelsToApply": {"pcsa.projectcalico.org/name": "api", "pcsa.role": "backend"}},
    }
    # With a uid and creation time (what the apiserver sets), the profile carries both.
    # The profile's uid is derived from the account's (bits of each byte reversed, version and
    # variant bytes kept), as Calico's Kubernetes backend does; values seen from Calico Typha.
    stamped = mutate(
        sa,
        lambda s: s["metadata"].update(
            uid="a8d20564-be87-41ec-8753-2a0e0eb4a222", creationTimestamp="2026-01-01T00:00:00Z"
        ),
    )
    assert service_account_to_profile(stamped)["metadata"] == {
        "name": "ksa.web.api",
        "uid": "154ba026-7de1-4137-87ca-5470702d4544",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    assert derived_uid("e925d60f-3534-4aa3-b405-07f50cae21d3") == (
        "97a46bf0-ac2c-4ac5-b4a0-e0af307584cb"
    )
    assert derived_uid("not-a-uuid") is None
    assert k8s_to_updates(sa)[:2] == [
        Update(
            "/calico/v1/policy/profile/ksa.web.api/rules",
            {"inbound_rules": [], "outbound_rules": []},
        ),
        Update(
            "/calico/v1/policy/profile/ksa.web.api/labels",
            {"pcsa.projectcalico.org/name": "api", "pcsa.role": "backend"},
        ),
    ]


# --- Nodes ----------------------------------------------------------------------------------------

K8S_NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "node1",
        "resourceVersion": "77",
        "labels": {"kubernetes.io/hostname": "node1"},
        "annotations": {
            "projectcalico.org/IPv4Address": "10.0.0.11/24",
            "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.162.128",
            "projectcalico.org/ASNumber": "64512",
            "projectcalico.org/IPv4VXLANTunnelAddr": "192.168.162.129",
            "projectcalico.org/VXLANTunnelMACAddr": "66:aa:bb:cc:dd:ee",
            "projectcalico.org/WireguardPublicKey": "pk=",
            "projectcalico.org/IPv4WireguardInterfaceAddr": "192.168.162.130",
            "node.alpha.kubernetes.io/ttl": "0",
        },
    },
    "spec": {"podCIDR": "192.168.162.128/26", "podCIDRs": ["192.168.162.128/26"]},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "10.0.0.11"},
            {"type": "Hostname", "address": "node1"},
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}
        ],
        "allocatable": {"cpu": "4"},
    },
}


def test_node_to_v3() -> None:
    assert node_to_v3(K8S_NODE) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {
            "name": "node1",
            "labels": {"kubernetes.io/hostname": "node1"},
            # Calico's Kubernetes backend keeps the node's own labels as JSON here too.
            "annotations": {"projectcalico.org/kube-labels": '{"kubernetes.io/hostname":"node1"}'},
        },
        "spec": {
            "addresses": [
                {"address": "10.0.0.11/24", "type": "CalicoNodeIP"},
                {"address": "10.0.0.11", "type": "InternalIP"},
            ],
            "bgp": {
                "ipv4Address": "10.0.0.11/24",
                "ipv4IPIPTunnelAddr": "192.168.162.128",
                "asNumber": 64512,
            },
            "ipv4VXLANTunnelAddr": "192.168.162.129",
            "vxlanTunnelMACAddr": "66:aa:bb:cc:dd:ee",
            "wireguard": {"interfaceIPv4Address": "192.168.162.130"},
            "orchRefs": [{"nodeName": "node1", "orchestrator": "k8s"}],
        },
        "status": {"wireguardPublicKey": "pk=", "podCIDRs": ["192.168.162.128/26"]},
    }


def test_node_updates_and_heartbeat_invariance() -> None:
    updates = k8s_to_updates(K8S_NODE)
    assert [u.key for u in updates] == [
        "/calico/v1/host/node1/config/IpInIpTunnelAddr",
        "/calico/v1/host/node1/config/IPv4VXLANTunnelAddr",
        "/calico/v1/host/node1/config/VXLANTunnelMACAddr",
        "/calico/v1/host/node1/wireguard",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]
    assert updates[3].value == {
        "interfaceIPv4Addr": "192.168.162.130",
        "publicKey": "pk=",
        "interfaceIPv6Addr": "",
        "publicKeyV6": "",
    }

    def heartbeat(n: dict[str, Any]) -> None:
        n["metadata"]["resourceVersion"] = "78"
        n["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:05:00Z"
        n["status"]["allocatable"]["cpu"] = "3"
        n["status"]["images"] = [{"names": ["nginx"]}]

    assert packed(k8s_to_updates(mutate(K8S_NODE, heartbeat))) == packed(updates)


def test_node_without_calico_annotations_falls_back_to_internal_ip() -> None:
    node = mutate(K8S_NODE, lambda n: n["metadata"].pop("annotations"))
    v3 = node_to_v3(node)
    assert v3["spec"]["addresses"] == [{"address": "10.0.0.11", "type": "InternalIP"}]
    assert "bgp" not in v3["spec"]
    assert [u.key for u in k8s_to_updates(node)] == [
        "/calico/resources/v3/projectcalico.org/nodes/node1",
    ]


# --- Calico CRDs ----------------------------------------------------------------------------------

CRD_SPECS: list[tuple[str, str, dict[str, Any]]] = [
    ("NetworkPolicy", "ns1", {"selector": "a == 'b'", "ingress": [{"action": "Allow"}]}),
    ("GlobalNetworkPolicy", "", {"selector": "a == 'b'", "egress": [{"action": "Deny"}]}),
    ("Tier", "", {"order": 100, "defaultAction": "Pass"}),
    ("IPPool", "", {"cidr": "10.244.0.0/16", "vxlanMode": "Always"}),
    ("HostEndpoint", "", {"node": "node1", "interfaceName": "eth0"}),
    ("FelixConfiguration", "", {"logSeverityScreen": "Info"}),
    ("BGPConfiguration", "", {"asNumber": 64512}),
    ("BGPPeer", "", {"peerIP": "10.0.0.1", "asNumber": 64513}),
    ("IPAMBlock", "", {"cidr": "10.244.1.0/26", "affinity": "host:node1"}),
    (
        "BlockAffinity",
        "",
        {"state": "confirmed", "node": "node1", "cidr": "10.244.1.0/26", "deleted": "false"},
    ),
    ("ClusterInformation", "", {"datastoreReady": True, "clusterGUID": "g"}),
    ("NetworkSet", "ns1", {"nets": ["10.0.0.0/8"]}),
    ("GlobalNetworkSet", "", {"nets": ["10.0.0.0/8"]}),
]


@pytest.mark.parametrize(("kind", "namespace", "spec"), CRD_SPECS, ids=[c[0] for c in CRD_SPECS])
def test_crd_kinds_convert_like_v3(kind: str, namespace: str, spec: dict[str, Any]) -> None:
    name = "default" if kind in ("FelixConfiguration", "ClusterInformation") else "x"
    meta: dict[str, Any] = {"name": name, "labels": {"l": "v"}}
    if namespace:
        meta["namespace"] = namespace
    v3 = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    crd_meta = {
        **meta,
        "resourceVersion": "123",
        "generation": 4,
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
    }
    crd = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": crd_meta,
        "spec": spec,
    }
    expected = v3_to_updates(v3)
    assert expected  # every listed kind produces something for Felix or confd

    def model(updates: list[Update]) -> list[Update]:
        return [u for u in updates if not u.key.startswith("/calico/resources/")]

    assert model(k8s_to_updates(crd)) == model(expected)
    # As Calico's Kubernetes backend: the custom resource's metadata, less its resourceVersion
    # (passthrough resources carry generation, managedFields and annotations like Go's).
    assert crd_to_v3(crd)["metadata"] == {
        k: v for k, v in crd_meta.items() if k != "resourceVersion"
    }
    churned = copy.deepcopy(crd)
    churned["metadata"]["resourceVersion"] = "124"
    assert packed(k8s_to_updates(churned)) == packed(k8s_to_updates(crd))


def test_unknown_crd_kind_and_unserved_objects() -> None:
    with pytest.raises(InvalidResource, match="unknown Calico CRD kind"):
        k8s_to_updates(
            {"apiVersion": "crd.projectcalico.org/v1", "kind": "Widget", "metadata": {"name": "w"}}
        )
    assert (
        k8s_to_updates({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}) == []
    )
    assert (
        k8s_to_updates({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
        == []
    )


def test_crd_metadata_annotation_and_derived_uid_like_calico() -> None:
    """Calico keeps v3 metadata it cannot store natively in `projectcalico.org/metadata`; it wins
    over the custom resource's own, and the uid is always derived from the resource's."""
    crd = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BGPPeer",
        "metadata": {
            "name": "peer1",
            "uid": "e925d60f-3534-4aa3-b405-07f50cae21d3",
            "resourceVersion": "9",
            "creationTimestamp": "2026-01-02T00:00:00Z",
            "labels": {"own": "1"},
            "annotations": {
                "projectcalico.org/metadata": '{"creationTimestamp":"2026-01-01T00:00:00Z",'
                '"labels":{"v3":"2"},"annotations":{"note":"x"}}',
                "other": "y",
            },
        },
        "spec": {"peerIP": "10.0.0.1", "asNumber": 64513},
    }
    assert crd_to_v3(crd)["metadata"] == {
        "name": "peer1",
        "uid": "97a46bf0-ac2c-4ac5-b4a0-e0af307584cb",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"own": "1", "v3": "2"},
        "annotations": {"other": "y", "note": "x"},
    }
    (resource,) = [u for u in k8s_to_updates(crd) if u.key.endswith("/bgppeers/peer1")]
    assert "resourceVersion" not in resource.value["metadata"]


def test_services_and_endpoint_slices_pass_through_like_calico() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "uid": "u"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {}},
    }
    assert k8s_to_updates(svc) == [
        Update(
            "/calico/resources/v3/projectcalico.org/kubernetesservice/shop/web",
            {
                "metadata": {"name": "web", "namespace": "shop", "uid": "u"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
                "status": {"loadBalancer": {}},
            },
        )
    ]
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "8"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"]}],
    }
    (update,) = k8s_to_updates(eps)
    assert (
        update.key == "/calico/resources/v3/projectcalico.org/kubernetesendpointslices/shop/web-1"
    )
    assert update.value == {
        "metadata": {"name": "web-1", "namespace": "shop"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"]}],
    }
