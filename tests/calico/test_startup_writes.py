"""Start-up writes: on an empty datastore our Typha creates the same ClusterInformation and tiers as
Calico Typha does, and never overwrites what is already there.

Each Typha gets its own FRESH datastore: on a shared one the second would find what the first
wrote and pass without doing anything.  The objects are compared after removing what is unique per
write (uid, creation time, the random cluster GUID, Kubernetes' own bookkeeping), each of which
is checked for its form instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.calico.conftest import KubeFactory
from tests.calico.ourside import TyphaPy
from tests.peers.calico_typha import CalicoTypha
from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.peers.plugin import EtcdFactory

V3 = "/calico/resources/v3/projectcalico.org/"
NAMES = ("clusterinformations/default", "tiers/default", "tiers/kube-admin", "tiers/kube-baseline")
GUID = re.compile(r"^[0-9a-f]{32}$")
UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def etcd_objects(etcd: EtcdServer) -> dict[str, Any]:
    out = {}
    for name in NAMES:
        raw = etcd.get(V3 + name)
        if raw is not None:
            out[name] = json.loads(raw)
    return out


def kube_objects(kube: KubeApiServer) -> dict[str, Any]:
    out = {}
    for name in NAMES:
        r = kube.request("GET", f"/apis/crd.projectcalico.org/v1/{name}")
        if r.status_code == 200:
            out[name] = r.json()
    return out


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without per-write values, after checking each one's form."""
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    for k in ("resourceVersion", "generation", "managedFields"):
        meta.pop(k, None)
    if "uid" in meta:
        assert UID.match(meta.pop("uid")), obj
    if "creationTimestamp" in meta:
        assert TIMESTAMP.match(meta.pop("creationTimestamp")), obj
    note = (meta.get("annotations") or {}).get("projectcalico.org/metadata")
    if note is not None:
        # Calico's Kubernetes backend keeps v3 metadata it cannot store natively here.
        inner = json.loads(note)
        assert TIMESTAMP.match(inner.pop("creationTimestamp")), note
        meta["annotations"]["projectcalico.org/metadata"] = inner
    spec = obj.get("spec") or {}
    if "clusterGUID" in spec:
        assert GUID.match(spec.pop("clusterGUID")), obj
    return obj


def fresh_objects(
    make_store: Callable[[], Any], typha_cls: type, kind: str, read: Callable[[Any], dict]
) -> dict[str, Any]:
    store = make_store()
    assert read(store) == {}, "the datastore must start empty"
    with typha_cls(**{kind: store}):
        pass  # healthy (in sync) means initialization is done: both write before syncing
    objs = read(store)
    assert set(objs) == set(NAMES), sorted(objs)
    return {name: normalized(obj) for name, obj in objs.items()}


@pytest.mark.usefixtures("calico_binaries")
def test_startup_objects_on_fresh_etcd_match_go(etcd_factory: EtcdFactory) -> None:
    go = fresh_objects(etcd_factory, CalicoTypha, "etcd", etcd_objects)
    ours = fresh_objects(etcd_factory, TyphaPy, "etcd", etcd_objects)
    assert go["clusterinformations/default"]["spec"] == {
        "clusterType": "typha",
        "datastoreReady": True,
    }
    assert go["tiers/kube-admin"]["spec"] == {"order": 1000, "defaultAction": "Pass"}
    assert ours == go


@pytest.mark.usefixtures("calico_binaries")
def test_startup_objects_on_fresh_kubernetes_match_go(calico_kube_factory: KubeFactory) -> None:
    go = fresh_objects(calico_kube_factory, CalicoTypha, "kube", kube_objects)
    ours = fresh_objects(calico_kube_factory, TyphaPy, "kube", kube_objects)
    assert go["clusterinformations/default"]["spec"]["clusterType"] == "typha,kdd"
    assert go["tiers/default"]["spec"] == {"order": 1000000, "defaultAction": "Deny"}
    assert ours == go


def test_existing_objects_are_never_overwritten(etcd_factory: EtcdFactory) -> None:
    etcd = etcd_factory()
    mine = {
        "kind": "ClusterInformation",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default"},
        "spec": {"clusterGUID": "0123456789abcdef0123456789abcdef", "clusterType": "ops"},
    }
    tier = {
        "kind": "Tier",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "kube-admin"},
        "spec": {"order": 5, "defaultAction": "Deny"},
    }
    etcd.put(V3 + "clusterinformations/default", json.dumps(mine))
    etcd.put(V3 + "tiers/kube-admin", json.dumps(tier))
    with TyphaPy(etcd=etcd):
        pass
    objs = etcd_objects(etcd)
    assert objs["clusterinformations/default"] == mine
    assert objs["tiers/kube-admin"] == tier
    # Positive control: the missing ones were created in the same start.
    assert objs["tiers/default"]["spec"] == {"order": 1000000, "defaultAction": "Deny"}
    assert objs["tiers/kube-baseline"]["spec"]["defaultAction"] == "Pass"


def test_read_only_identity_skips_the_writes_and_still_serves(etcd_factory: EtcdFactory) -> None:
    """An etcd user that may only read: the start-up writes are refused, logged and skipped,
    and Typha still syncs and serves (readiness is its in-sync).  Positive control: the same
    start with the root user creates them."""
    etcd = etcd_factory()
    etcd.enable_auth("root", "pw")
    etcd.add_user("reader", "pw2", read_prefix="/calico/")
    reader = {"TYPHA_ETCDUSERNAME": "reader", "TYPHA_ETCDPASSWORD": "pw2"}
    with TyphaPy(etcd=etcd, extra_env=reader) as typha:
        log = typha.log_path.read_text()
    assert "not allowed to create start-up object" in log
    assert etcd_objects(etcd) == {}
    root = {"TYPHA_ETCDUSERNAME": "root", "TYPHA_ETCDPASSWORD": "pw"}
    with TyphaPy(etcd=etcd, extra_env=root):
        pass
    assert set(etcd_objects(etcd)) == set(NAMES)
