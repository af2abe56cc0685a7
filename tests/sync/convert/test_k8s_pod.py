"""Kubernetes Pods → v3 WorkloadEndpoints → WorkloadEndpoint keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.sync.convert.helpers import mutate, packed
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    k8s_interface_name,
    k8s_to_updates,
    pod_to_updates,
    pod_to_workload_endpoint,
    pod_workload_endpoint_key,
)

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
