"""Real Felix on random clusters on the Kubernetes datastore: the same dataplane from typha-py as
from Calico Typha, each on a fresh kube-apiserver (own etcd) with Calico's CRDs from the tarball.

The cluster is the etcd random test's (config/examples plus `tests/calico/randv3.cluster(seed)`)
in its Kubernetes form (`tests.calico.datasets.kubernetes_objects`): WorkloadEndpoints become
running Pods in Namespaces (labels, IPs, named ports), Nodes core Nodes, and the Calico kinds
(tier, global and namespaced policies, network sets, host endpoints, pool, blocks, ...) custom
resources.  On Kubernetes a pod's host-side veth is named by Calico's hash of "<namespace>.<pod>",
not by the v3 resource's `interfaceName`, so the random endpoints are renamed to that hash first
(the veths Felix needs for its /32 routes are made under those names).

Positive controls: the examples' chains, selector ipset and routes and Felix's "Completed first
update" line, as in the other tests; a to/from-workload chain and a /32 route for every random
pod on node1 (the Pods reached Felix as endpoints, under the names and addresses expected); and
the comparison itself tells a dataplane with one rule dropped apart.

`make test` runs one fixed seed; `make fuzz` runs `TYPHA_FELIX_CLUSTERS` seeds, as the etcd
random test does (`TYPHA_FELIX_SEED` replays one; the seed is in the test id).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.felix import datasets, snapshot
from tests.felix.controls import assert_programmed
from tests.felix.lab import NODE_NAME, FelixLab
from tests.felix.test_felix_random_clusters import SEEDS, resources_for
from tests.peers.felix import Felix
from typha.sync.convert import k8s_interface_name

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.k8s]

# Two kube-apiserver starts with CRDs (10-40 s each on a loaded machine) and two Felix starts.
FELIX_TEST_SECONDS = 300


def kubernetes_resources(seed: int) -> list[dict[str, Any]]:
    """The random cluster with each k8s WorkloadEndpoint's interfaceName as Calico derives it
    from its Pod (what Felix will be told on Kubernetes)."""
    out = copy.deepcopy(resources_for(seed))
    for r in out:
        if r["kind"] == "WorkloadEndpoint" and r["spec"].get("orchestrator") == "k8s":
            spec = r["spec"]
            spec["interfaceName"] = k8s_interface_name(r["metadata"]["namespace"], spec["pod"])
    return out


def local_routes(resources: list[dict[str, Any]]) -> dict[str, str]:
    """{interfaceName: address} of node1's workload endpoints."""
    return {
        r["spec"]["interfaceName"]: r["spec"]["ipNetworks"][0].split("/")[0]
        for r in resources
        if r["kind"] == "WorkloadEndpoint" and r["spec"]["node"] == NODE_NAME
    }


def program(lab: FelixLab, typha_kind: str, resources: list[dict[str, Any]]) -> tuple[Felix, Any]:
    lab.add_workload_interfaces(resources)
    kube = lab.kube()
    lab.load(kube, resources)
    typha = lab.calico_typha(kube) if typha_kind == "calico" else lab.typha_py(kube)
    felix = lab.felix(kube, typha)
    return felix, lab.snapshot()


def assert_random_programmed(
    felix: Felix, snap: snapshot.Snapshot, resources: list[dict[str, Any]]
) -> None:
    assert_programmed(felix, snap)
    chains = snap.chains()
    local = local_routes(resources)
    assert len(local) > len(datasets.NODE1_ENDPOINTS), local  # random pods are on node1 too
    for iface, ip in local.items():
        assert {f"cali-tw-{iface}", f"cali-fw-{iface}"} <= chains, iface
        assert any(r.startswith(f"{ip} dev {iface} ") for r in snap.routes), (ip, iface)


def _stop_all(lab: FelixLab) -> None:
    for peer in list(lab._peers):
        lab.stop(peer)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kubernetes_cluster_same_from_typha_py_as_from_calico_typha(
    felix_lab: FelixLab, seed: int
) -> None:
    resources = kubernetes_resources(seed)
    felix, from_go = program(felix_lab, "calico", resources)
    assert_random_programmed(felix, from_go, resources)
    felix_lab.fresh_node(felix)
    _stop_all(felix_lab)  # the other side gets a fresh kube-apiserver, etcd and Typha
    felix, from_py = program(felix_lab, "typha-py", resources)
    assert_random_programmed(felix, from_py, resources)
    assert snapshot.diff(from_go, from_py) == [], f"seed {seed}"
    # Negative control: the same comparison sees one rule dropped from a random pod's chain.
    iface = next(i for i in local_routes(resources) if i not in datasets.NODE1_ENDPOINTS)
    chain = f"cali-tw-{iface}"
    broken = copy.deepcopy(from_py)
    broken.iptables["filter"][chain] = from_py.iptables["filter"][chain][:-1]
    assert snapshot.diff(from_go, broken), chain
