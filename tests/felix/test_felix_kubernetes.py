"""Real Felix on the Kubernetes datastore: it programs node1 the same from typha-py as from
Calico Typha, each on a fresh kube-apiserver (own etcd) holding Calico's CRDs from the tarball and
the Kubernetes form of the examples (Namespaces, core Nodes, running Pods, custom resources).

Felix reads its start-up config (ClusterInformation's ready flag, FelixConfiguration, its Node)
from the apiserver itself and everything else through the Typha, so the apiserver sits in the
control namespace on the veth address, named by its certificate and kubeconfig.  Positive
controls as on etcd: per-endpoint chains, the selector ipset and member, workload routes, Felix's
"Completed first update" line; plus a relabel of the frontend Pod that Felix must follow.
"""

from __future__ import annotations

import time

import pytest

from tests.felix import datasets, snapshot
from tests.felix.controls import assert_programmed, selector_members
from tests.felix.lab import FelixLab
from tests.felix.netns import entered
from tests.peers.felix import Felix, NsKubeApiServer

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.k8s]

# Each kube-apiserver start with CRDs takes 10-40 s on a loaded machine.
FELIX_TEST_SECONDS = 300


def program(lab: FelixLab, typha_kind: str) -> tuple[Felix, snapshot.Snapshot, NsKubeApiServer]:
    resources = datasets.examples()
    lab.add_workload_interfaces(resources)
    kube = lab.kube()
    lab.load(kube, resources)
    typha = lab.calico_typha(kube) if typha_kind == "calico" else lab.typha_py(kube)
    felix = lab.felix(kube, typha)
    return felix, lab.snapshot(), kube


def _stop_all_but_felix(lab: FelixLab) -> None:
    """Stop this side's Typha, apiserver and etcd (the other side gets fresh ones)."""
    for peer in list(lab._peers):
        if not isinstance(peer, Felix):
            lab.stop(peer)


def test_felix_on_kubernetes_same_from_typha_py_as_from_calico_typha(felix_lab: FelixLab) -> None:
    felix, from_go, _ = program(felix_lab, "calico")
    assert_programmed(felix, from_go)
    go_secs = (felix.startup_seconds, felix.first_update_seconds())
    felix_lab.fresh_node(felix)
    _stop_all_but_felix(felix_lab)
    felix, from_py, _ = program(felix_lab, "typha-py")
    assert_programmed(felix, from_py)
    py_secs = (felix.startup_seconds, felix.first_update_seconds())
    print(f"\nKDD Felix exec->ready, first update (s): calico-typha {go_secs}, typha-py {py_secs}")
    assert snapshot.diff(from_go, from_py) == []


@pytest.mark.parametrize("typha_kind", ["typha-py", "calico"])
def test_felix_on_kubernetes_follows_a_pod_relabel(felix_lab: FelixLab, typha_kind: str) -> None:
    felix, before, kube = program(felix_lab, typha_kind)
    assert_programmed(felix, before)
    assert "192.168.162.147" in selector_members(before)  # positive control
    frontend = next(
        r["spec"]["pod"]
        for r in datasets.examples()
        if r["kind"] == "WorkloadEndpoint" and "frontend" in r["metadata"]["name"]
    )
    t0 = time.monotonic()
    with entered(felix_lab.ctl):
        r = kube.request(
            "PATCH",
            f"/api/v1/namespaces/myproject/pods/{frontend}",
            json={"metadata": {"labels": {"app": "not-frontend"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert r.status_code == 200, r.text
    while "192.168.162.147" in selector_members(felix_lab.snapshot()):
        assert time.monotonic() - t0 < 10, "Felix did not drop the relabelled Pod within 10 s"
        time.sleep(0.05)
    print(f"\nPod relabel -> Felix ipset through {typha_kind} (KDD): {time.monotonic() - t0:.3f}s")
    assert felix.running
