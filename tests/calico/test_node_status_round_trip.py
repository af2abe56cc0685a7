"""A CalicoNodeStatus round trip through typha-py on the real kube-apiserver, the way calico-node's
status reporter does it: it reads the request over the node-status syncer (Calico's own client,
syncdump), writes the status back with the update's V3ResourceVersion as the object's
resourceVersion (optimistic concurrency: a wrong one is refused with 409), and the written
status reaches Calico's client from typha-py with the new resource version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.calico.conftest import KubeFactory
from tests.calico.datasets import load_kubernetes
from tests.calico.ourside import TyphaPy
from tests.peers.calico_typha import syncdump

STATUS_KEY = "/calico/resources/v3/projectcalico.org/caliconodestatuses/node1-status"
STATUS_PATH = "/apis/crd.projectcalico.org/v1/caliconodestatuses/node1-status/status"
REQUEST = """
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: node1-status}
spec: {node: node1, classes: [Agent], updatePeriodSeconds: 10}
"""


def _entry(address: str) -> dict:
    dump = syncdump(address, "node-status", timeout=30)
    return next(e for e in dump["kvs"] if e["key"] == STATUS_KEY)


@pytest.mark.usefixtures("calico_binaries")
def test_calico_node_status_round_trip_with_the_v3_resource_version(
    calico_kube_factory: KubeFactory, tmp_path: Path
) -> None:
    del tmp_path
    kube = calico_kube_factory()
    load_kubernetes(kube, list(yaml.safe_load_all(REQUEST)))
    with TyphaPy(kube=kube) as ours:
        before = _entry(ours.address)
        rv = before["v3_resource_version"]
        assert rv, "typha-py sent no V3ResourceVersion for the status request"
        value = json.loads(before["value"])
        # (libcalico-go re-serializes an empty status as empty structs.)
        assert not ((value.get("status") or {}).get("agent") or {}).get("birdV4")
        status = {
            "lastUpdated": "2026-01-01T00:00:00Z",
            "agent": {"birdV4": {"state": "Ready", "version": "v0.3.3"}},
        }
        body = {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "CalicoNodeStatus",
            "metadata": {"name": "node1-status", "resourceVersion": rv},
            "spec": value["spec"],
            "status": status,
        }
        with kube.http_client() as c:
            # A stale resource version is refused: the check the reporter relies on is real.
            stale_meta = {**body["metadata"], "resourceVersion": "1"}
            stale = c.put(STATUS_PATH, json={**body, "metadata": stale_meta})
            assert stale.status_code == 409, stale.text
            written = c.put(STATUS_PATH, json=body)
            assert written.status_code == 200, written.text
            new_rv = written.json()["metadata"]["resourceVersion"]
        assert new_rv != rv
        deadline = time.monotonic() + 15
        after = _entry(ours.address)
        while after["v3_resource_version"] != new_rv and time.monotonic() < deadline:
            time.sleep(0.3)
            after = _entry(ours.address)
        assert after["v3_resource_version"] == new_rv
        assert json.loads(after["value"])["status"]["agent"]["birdV4"]["state"] == "Ready"
