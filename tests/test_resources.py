"""typha.resources: loading, validating and CNI-style WorkloadEndpoints; the example cluster."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from typha.resources import (
    dump_documents,
    load_documents,
    parse_documents,
    validate_resource,
    validate_resources,
    workload_endpoint_for_pod,
)
from typha.sync.convert import (
    InvalidResource,
    convert_etcd_kv,
    etcd_key_for,
    etcd_value_for,
    pod_to_updates,
    v3_to_updates,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"


# --- loading --------------------------------------------------------------------------------------


def test_parse_multi_document_yaml_and_lists() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: a}
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: b}}
- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: c}}
---
kind: TierList
apiVersion: projectcalico.org/v3
items: [{kind: Tier, metadata: {name: d}}]
"""
    names = [d["metadata"]["name"] for d in parse_documents(text)]
    assert names == ["a", "b", "c", "d"]


def test_parse_json_object_and_array() -> None:
    obj = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "a"}}
    assert parse_documents(json.dumps(obj)) == [obj]
    assert parse_documents(json.dumps([obj, obj])) == [obj, obj]


def test_parse_errors_name_the_source() -> None:
    with pytest.raises(InvalidResource, match=r"^my\.yaml: cannot parse"):
        parse_documents("a: [unclosed", "my.yaml")
    with pytest.raises(InvalidResource, match=r"my\.yaml#1: a document must be a mapping"):
        parse_documents("kind: Tier\n---\n- - nested\n- 5\n", "my.yaml")
    with pytest.raises(InvalidResource, match="items must be a list"):
        parse_documents("kind: List\nitems: 5\n")


def test_load_documents_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.yaml").write_text("kind: Tier\nmetadata: {name: b}\n")
    (tmp_path / "a.json").write_text('{"kind": "Tier", "metadata": {"name": "a"}}')
    (tmp_path / "sub" / "c.yml").write_text("kind: Tier\nmetadata: {name: c}\n")
    (tmp_path / "notes.txt").write_text("not a resource")
    assert [d["metadata"]["name"] for d in load_documents(tmp_path)] == ["a", "b", "c"]
    assert [d["metadata"]["name"] for d in load_documents(tmp_path / "b.yaml")] == ["b"]
    with pytest.raises(OSError):
        load_documents(tmp_path / "missing.yaml")


# --- validation -----------------------------------------------------------------------------------


def test_validate_policy_defaults_and_strips_server_metadata() -> None:
    doc = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "resourceVersion": "5", "managedFields": []},
        "spec": {"egress": [{"action": "Allow"}]},
    }
    out = validate_resource(doc)
    assert out == {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"egress": [{"action": "Allow"}], "tier": "default", "types": ["Egress"]},
        "apiVersion": "projectcalico.org/v3",
    }
    assert doc["metadata"]["resourceVersion"] == "5"  # input untouched
    assert validate_resource(out) == out  # idempotent


def test_validate_ip_pool_and_tier_defaults() -> None:
    pool = validate_resource(
        {"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}}
    )
    assert pool["spec"] == {
        "cidr": "10.0.0.0/16",
        "blockSize": 26,
        "ipipMode": "Never",
        "vxlanMode": "Never",
        "natOutgoing": False,
        "disabled": False,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    v6 = validate_resource(
        {"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "fd00::/64"}}
    )
    assert v6["spec"]["blockSize"] == 122
    assert validate_resource({"kind": "Tier", "metadata": {"name": "t"}})["spec"] == {
        "defaultAction": "Deny"
    }
    assert validate_resource({"kind": "Tier", "metadata": {"name": "default"}})["spec"] == {
        "defaultAction": "Deny",
        "order": 1_000_000.0,
    }
    staged = validate_resource(
        {"kind": "StagedGlobalNetworkPolicy", "metadata": {"name": "s"}, "spec": {}}
    )
    assert staged["spec"] == {"tier": "default", "stagedAction": "Set", "types": ["Ingress"]}


def test_validate_accepts_crd_api_version() -> None:
    out = validate_resource(
        {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "GlobalNetworkSet",
            "metadata": {"name": "g", "resourceVersion": "9"},
            "spec": {"nets": ["10.0.0.0/8"]},
        }
    )
    assert out["apiVersion"] == "projectcalico.org/v3"
    assert out["metadata"] == {"name": "g"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "Widget", "metadata": {"name": "w"}}, r"^Widget w: kind: unknown kind"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "apiVersion must be"),
        ({"kind": "Tier"}, r"metadata: required"),
        ({"kind": "Tier", "metadata": {}}, r"metadata\.name: required"),
        ({"kind": "Tier", "metadata": {"name": "a/b"}}, "contain no '/'"),
        ({"kind": "Tier", "metadata": {"name": "t", "namespace": "n"}}, "cluster-scoped"),
        ({"kind": "Tier", "metadata": {"name": "t"}, "spec": []}, r"spec: expected a mapping"),
        (
            {"kind": "IPPool", "metadata": {"name": "pool1"}, "spec": {"cidr": "10.0.0.0/40"}},
            r"^IPPool pool1: spec\.cidr: '10\.0\.0\.0/40' is not a CIDR",
        ),
        (
            {
                "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "n"},
                "spec": {"selector": "app == 'x"},
            },
            r"^NetworkPolicy n/p: spec\.selector: unterminated string",
        ),
        (
            {
                "kind": "WorkloadEndpoint",
                "metadata": {"name": "bad"},
                "spec": {"ipNetworks": ["10.0.0.1"]},
            },
            r"^WorkloadEndpoint default/bad: metadata\.name",
        ),
    ],
)
def test_validate_errors_name_the_document(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        validate_resource(doc)


def test_validate_resources_stops_at_first_invalid() -> None:
    good = {"kind": "Tier", "metadata": {"name": "t"}}
    assert len(validate_resources([good, good])) == 2
    with pytest.raises(InvalidResource):
        validate_resources([good, {"kind": "Tier", "metadata": {}}])


# --- CNI-style WorkloadEndpoints ------------------------------------------------------------------


def test_workload_endpoint_for_pod() -> None:
    wep = workload_endpoint_for_pod(
        "node-1", "web", "nginx-7c5ddbdf54-2dv4k", "192.168.162.146", {"app": "nginx"},
        container_id="abc", ports=[{"name": "http", "port": 80}],
    )  # fmt: skip
    assert wep == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": "node--1-k8s-nginx--7c5ddbdf54--2dv4k-eth0",
            "namespace": "web",
            "labels": {
                "app": "nginx",
                "projectcalico.org/namespace": "web",
                "projectcalico.org/orchestrator": "k8s",
                "projectcalico.org/serviceaccount": "default",
            },
        },
        "spec": {
            "orchestrator": "k8s",
            "node": "node-1",
            "containerID": "abc",
            "pod": "nginx-7c5ddbdf54-2dv4k",
            "endpoint": "eth0",
            "serviceAccountName": "default",
            "ipNetworks": ["192.168.162.146/32"],
            "profiles": ["kns.web", "ksa.web.default"],
            "interfaceName": "calia53571dc704",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
        },
    }
    (update,) = v3_to_updates(wep)
    assert (
        update.key
        == "/calico/v1/host/node-1/workload/k8s/web%2fnginx-7c5ddbdf54-2dv4k/endpoint/eth0"
    )


def test_workload_endpoint_for_pod_options() -> None:
    wep = workload_endpoint_for_pod(
        "n1", "ns", "p", ["10.0.0.5/32", "fd00::5"], service_account=None, mac="ee:ee:ee:ee:ee:ee"
    )
    assert wep["spec"]["ipNetworks"] == ["10.0.0.5/32", "fd00::5/128"]
    assert wep["spec"]["profiles"] == ["kns.ns"]
    assert "serviceAccountName" not in wep["spec"]
    assert "projectcalico.org/serviceaccount" not in wep["metadata"]["labels"]
    assert wep["spec"]["mac"] == "ee:ee:ee:ee:ee:ee"
    with pytest.raises(InvalidResource, match="not an IP"):
        workload_endpoint_for_pod("n1", "ns", "p", "nope")


def test_cni_written_wep_and_kdd_pod_give_the_same_model_value() -> None:
    """An etcd cluster (CNI writes the WEP) and a KDD cluster (pod) agree on the model."""
    wep = workload_endpoint_for_pod(
        "node-1", "web", "nginx-1", "192.168.162.146", {"app": "nginx"}, container_id="c0ffee",
        ports=[{"name": "http", "protocol": "TCP", "port": 80}],
    )  # fmt: skip
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "nginx-1",
            "namespace": "web",
            "labels": {"app": "nginx"},
            "annotations": {
                "cni.projectcalico.org/podIP": "192.168.162.146/32",
                "cni.projectcalico.org/containerID": "c0ffee",
            },
        },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "default",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}],
        },
        "status": {"phase": "Running"},
    }
    assert v3_to_updates(wep) == pod_to_updates(pod)


# --- the example cluster --------------------------------------------------------------------------


def examples() -> list[dict[str, Any]]:
    return load_documents(EXAMPLES)


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in examples() if d["kind"] == kind]


def test_examples_all_validate_and_round_trip_through_etcd() -> None:
    docs = examples()
    assert len(docs) == 23
    for doc in docs:
        valid = validate_resource(doc)
        updates = v3_to_updates(valid)
        assert convert_etcd_kv(etcd_key_for(valid), etcd_value_for(valid)) == updates


def test_example_pool_and_nodes_match_the_seed() -> None:
    (pool,) = by_kind("IPPool")
    assert pool["metadata"]["name"] == "default-ipv4-ippool"
    assert pool["spec"]["cidr"] == "192.168.0.0/16"
    assert pool["spec"]["ipipMode"] == "CrossSubnet"
    assert pool["spec"]["natOutgoing"] is True
    nodes = by_kind("Node")
    assert len(nodes) == 3
    assert all(n["spec"]["bgp"]["ipv4Address"] for n in nodes)


def test_example_workloads_match_the_seed() -> None:
    nginx = [w for w in by_kind("WorkloadEndpoint") if w["metadata"]["namespace"] == "web"]
    ips = sorted(ip for w in nginx for ip in w["spec"]["ipNetworks"])
    assert ips == ["192.168.162.146/32", "192.168.88.23/32", "192.168.91.20/32"]
    assert len({w["spec"]["node"] for w in nginx}) == 3
    for wep in by_kind("WorkloadEndpoint"):
        spec = wep["spec"]
        rebuilt = workload_endpoint_for_pod(
            spec["node"],
            wep["metadata"]["namespace"],
            spec["pod"],
            spec["ipNetworks"],
            {
                k: v
                for k, v in wep["metadata"]["labels"].items()
                if not k.startswith("projectcalico.org/")
            },
            container_id=spec["containerID"],
            ports=spec.get("ports", ()),
        )
        assert rebuilt == wep
    profiles = {p["metadata"]["name"] for p in by_kind("Profile")}
    assert {"kns.web", "kns.myproject", "ksa.web.default", "ksa.myproject.default"} <= profiles


def test_example_policies() -> None:
    (np_,) = by_kind("NetworkPolicy")
    (update,) = v3_to_updates(np_)
    assert update.key == "/calico/v1/policy/NetworkPolicy/myproject/allow-tcp-6379"
    assert update.value["inbound_rules"] == [
        {
            "action": "allow",
            "protocol": "tcp",
            "src_selector": "(projectcalico.org/namespace == 'myproject') && (app == 'frontend')",
            "dst_ports": [6379],
            "orig_src_selector": "app == 'frontend'",
        }
    ]
    (gnp,) = by_kind("GlobalNetworkPolicy")
    (update,) = v3_to_updates(gnp)
    assert update.key == "/calico/v1/policy/GlobalNetworkPolicy//allow-tcp-6379"
    assert update.value["selector"] == "app == 'database'"


def test_example_ipam_blocks_contain_every_workload_and_land_in_v1_paths() -> None:
    blocks = by_kind("IPAMBlock")
    affinities = by_kind("BlockAffinity")
    assert len(blocks) == len(affinities) == 3
    allocated: set[str] = set()
    for block in blocks:
        spec = block["spec"]
        net = ipaddress.ip_network(spec["cidr"])
        assert net.prefixlen == 26
        assert etcd_key_for(block) == (
            f"/calico/ipam/v2/assignment/ipv4/block/{spec['cidr'].replace('/', '-')}"
        )
        node = spec["affinity"].removeprefix("host:")
        for ordinal, attr in enumerate(spec["allocations"]):
            if attr is not None:
                allocated.add(str(net[ordinal]))
                assert spec["attributes"][attr]["secondary"]["node"] == node
        used = [i for i, a in enumerate(spec["allocations"]) if a is not None]
        assert sorted(spec["unallocated"] + used) == list(range(64))
    for wep in by_kind("WorkloadEndpoint"):
        assert wep["spec"]["ipNetworks"][0].removesuffix("/32") in allocated
    for node in by_kind("Node"):
        assert node["spec"]["bgp"]["ipv4IPIPTunnelAddr"] in allocated
    for affinity in affinities:
        key = etcd_key_for(affinity)
        assert key.startswith(f"/calico/ipam/v2/host/{affinity['spec']['node']}/ipv4/block/")
        assert etcd_value_for(affinity) == {"state": "confirmed", "deleted": False}


def test_dump_documents_round_trips() -> None:
    docs = examples()
    assert parse_documents(dump_documents(docs)) == copy.deepcopy(docs)
