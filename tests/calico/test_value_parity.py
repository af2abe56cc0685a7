"""Value-model parity over Calico's wire: on the same datastore content (config/examples plus
tests/calico/extra_resources.yaml and seeded random clusters), typha-py sends what Calico Typha
sends, on all four syncer types, on etcd and on a real kube-apiserver.

Both sides are dumped by syncdump (Calico's own syncclient, values parsed and re-serialized by
libcalico-go), so key sets, values, Revision, V3ResourceVersion and UpdateType are all compared.
Every difference must be listed in expected_diffs.yaml with its reason; an entry that no longer
matches fails the test as well; a negative control changes one value and requires exactly that
difference.

The static cases run Go Typha first and stop it before ours starts: ours sees what Go wrote at
start-up (the tiers) exactly as a second replica would.  The churn cases run both at once, with
Calico's client connected to each while the datastore changes, and use a sentinel key written
last as the barrier before dumping.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.calico.compare import (
    Allowed,
    Difference,
    compare,
    key_kind,
    load_allowlist,
    render_markdown,
    split_allowed,
    stale_entries,
    summarize,
)
from tests.calico.conftest import KubeFactory
from tests.calico.datasets import (
    extended,
    kubernetes_extended,
    kubernetes_objects,
    load_etcd,
    load_kubernetes,
)
from tests.calico.ourside import TyphaPy, msgpack_dump
from tests.calico.randv3 import cluster
from tests.calico.test_calico_typha import EXPECTED_KINDS_ETCD, EXPECTED_KINDS_KDD
from tests.peers.calico_typha import (
    SYNCER_TYPES,
    CalicoTypha,
    find_syncdump,
    reserialize,
    syncdump,
)
from tests.peers.plugin import EtcdFactory

ALLOWLIST = Path(__file__).with_name("expected_diffs.yaml")
# One fixed random cluster (tests/calico/randv3.py); another seed: TYPHA_CALICO_SEED=<n>.
RANDOM_SEED = int(os.environ.get("TYPHA_CALICO_SEED", "7"))
# What extra_resources.yaml adds to the kinds config/examples already shows.
EXTRA_KINDS = {
    "felix": {"HostEndpoint", "NetworkSet", "Resource:bgpconfigurations", "Resource:bgppeers"},
    "bgp": {"Resource:bgpconfigurations", "Resource:bgppeers"},
    "tunnel-ip-allocation": set(),
    "node-status": {"Resource:caliconodestatuses"},
}


def with_extra(kinds: dict[str, set[str]]) -> dict[str, set[str]]:
    return {s: kinds[s] | EXTRA_KINDS[s] for s in kinds}


OurDumper = Callable[[str, str, Path], dict[str, Any]]


def gob_dumper(address: str, syncer_type: str, work: Path) -> dict[str, Any]:
    """Our side over Calico's wire: Calico's own client (syncdump), exactly like Go's side, so
    revision, V3ResourceVersion and update type are compared too."""
    del work
    return syncdump(address, syncer_type)


def msgpack_dumper(address: str, syncer_type: str, work: Path) -> dict[str, Any]:
    """Our side through our msgpack client, reserialized by libcalico-go (no revision, resource
    version or update type on that wire); kept for comparing the msgpack path by hand."""
    return reserialize(msgpack_dump(address, syncer_type), work)


def dumps_of_both(
    store: dict[str, Any], work: Path, our_dumper: OurDumper = gob_dumper
) -> tuple[dict, dict]:
    with CalicoTypha(**store) as go:
        go_dumps = {s: syncdump(go.address, s) for s in SYNCER_TYPES}
    with TyphaPy(**store) as ours:
        our_dumps = {s: our_dumper(ours.address, s, work) for s in SYNCER_TYPES}
    return go_dumps, our_dumps


def check_parity(
    datastore: str,
    go_dumps: dict,
    our_dumps: dict,
    expected_kinds: dict,
    work: Path,
    label: str = "",
) -> None:
    allow = load_allowlist(ALLOWLIST)
    diffs: list[Difference] = []
    summaries = []
    for syncer in SYNCER_TYPES:
        go, ours = go_dumps[syncer], our_dumps[syncer]
        kinds = {key_kind(e["key"]) for e in go["kvs"]}
        assert expected_kinds[syncer] <= kinds, f"{syncer}: dataset lost kinds"
        found = compare(go, ours)
        diffs += found
        summaries.append(summarize(go, ours, found))
    report = render_markdown(f"Calico Typha vs typha-py on {datastore}", summaries, diffs)
    report_dir = Path(os.environ.get("TYPHA_CALICO_REPORT_DIR") or work)
    report_dir.joinpath(f"parity-{datastore}{label}.md").write_text(report)
    unexpected, _ = split_allowed(diffs, allow, datastore)
    stale = stale_entries(allow, datastore)
    assert not unexpected, "new differences:\n" + "\n".join(d.describe() for d in unexpected)
    assert not stale, "allowlist entries that no longer occur: " + ", ".join(
        f"{a.what} {a.kind or a.key}" for a in stale
    )
    # Negative control: one wrong value in our dump must be caught and not be allowlisted.
    felix = copy.deepcopy(our_dumps["felix"])
    wep = next(e for e in felix["kvs"] if key_kind(e["key"]) == "WorkloadEndpoint")
    value = json.loads(wep["value"])
    value["ipv4_nets"] = ["10.255.255.1/32"]
    wep["value"] = json.dumps(value)
    wrong, _ = split_allowed(
        compare(go_dumps["felix"], felix), load_allowlist(ALLOWLIST), datastore
    )
    assert [(d.key, d.path) for d in wrong] == [(wep["key"], "ipv4_nets[0]")]


@pytest.mark.usefixtures("calico_binaries")
def test_value_parity_on_etcd(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    etcd = etcd_factory()
    load_etcd(etcd, [*extended(), *cluster(RANDOM_SEED)])
    go, ours = dumps_of_both({"etcd": etcd}, tmp_path)
    check_parity("etcd", go, ours, with_extra(EXPECTED_KINDS_ETCD), tmp_path)


@pytest.mark.usefixtures("calico_binaries")
def test_value_parity_on_kubernetes(calico_kube_factory: KubeFactory, tmp_path: Path) -> None:
    kube = calico_kube_factory()
    load_kubernetes(kube, [*kubernetes_extended(), *cluster(RANDOM_SEED)])
    go, ours = dumps_of_both({"kube": kube}, tmp_path)
    check_parity("kubernetes", go, ours, with_extra(EXPECTED_KINDS_KDD), tmp_path)


def test_a_stale_allowlist_entry_is_reported() -> None:
    """The stale check can fail: an entry nothing matches is stale; once a difference matches
    it, it is not (positive control)."""
    entry = {"what": "value", "kind": "WorkloadEndpoint", "reason": "test"}
    allow = [Allowed(**entry)]
    split_allowed([], allow, "etcd")
    assert stale_entries(allow, "etcd") == allow
    hit = Difference(
        "felix", "WorkloadEndpoint", "/calico/v1/host/n/workload/k/w/endpoint/e", "value"
    )
    allow = [Allowed(**entry)]
    unexpected, allowed = split_allowed([hit], allow, "etcd")
    assert (unexpected, allowed, stale_entries(allow, "etcd")) == ([], [hit], [])


# -- churn: both Typhas connected while the datastore changes ------------------------------------

CHURN_SEED = 11
SENTINEL_NODE = "/calico/resources/v3/projectcalico.org/nodes/zz-sentinel"
SENTINEL_STATUS = "/calico/resources/v3/projectcalico.org/caliconodestatuses/zz-sentinel"
# The last write of the churn: a later write than everything compared, seen by every syncer type.
SENTINELS = {
    "felix": SENTINEL_NODE,
    "bgp": SENTINEL_NODE,
    "tunnel-ip-allocation": SENTINEL_NODE,
    "node-status": SENTINEL_STATUS,
}


def sentinel_resources() -> list[dict[str, Any]]:
    node = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": "zz-sentinel"},
        "spec": {"bgp": {"ipv4Address": "10.0.9.9/24"}},
    }
    status = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "CalicoNodeStatus",
        "metadata": {"name": "zz-sentinel"},
        "spec": {"node": "zz-sentinel", "classes": ["Agent"], "updatePeriodSeconds": 10},
    }
    return [node, status]


def churn(base: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(writes, deletes) over `base`: relabel every third labelled resource, change every fifth
    policy's order, delete every seventh resource, create a second random cluster's network
    sets and policies, and a new node."""
    writes, deletes = [], []
    for i, r in enumerate(base):
        r = copy.deepcopy(r)
        kind = r["kind"]
        if kind in ("ClusterInformation", "Tier", "FelixConfiguration", "IPPool", "Node"):
            continue  # keep the cluster's frame (start-up objects, pools, nodes) stable
        if i % 7 == 3:
            deletes.append(r)
        elif i % 3 == 0 and r["metadata"].get("labels") is not None:
            r["metadata"]["labels"] = {**r["metadata"]["labels"], "churned": f"r{i}"}
            writes.append(r)
        elif i % 5 == 0 and "order" in (r.get("spec") or {}):
            r["spec"]["order"] = float(r["spec"]["order"]) + 0.5
            writes.append(r)
    fresh = [r for r in cluster(CHURN_SEED) if r["kind"] in ("GlobalNetworkSet", "NetworkSet")]
    for r in fresh:
        r["metadata"]["name"] = "churn-" + r["metadata"]["name"]
    node = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": "node-churn"},
        "spec": {"bgp": {"ipv4Address": "10.0.9.10/24"}},
    }
    return [*writes, *fresh, node], deletes


def churn_etcd(etcd: Any, writes: list, deletes: list) -> None:
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_writer import apply_resources, delete_resources

    async def apply() -> None:
        async with EtcdClient([etcd.client_url]) as client:
            await delete_resources(client, deletes)
            await apply_resources(client, writes)
            await apply_resources(client, sentinel_resources())

    trio.run(apply)


def churn_kubernetes(kube: Any, writes: list, deletes: list) -> None:
    """Deletes and changes as a user would make them (DELETE, merge-patch of labels and spec;
    a pod's spec is immutable, so only its labels), then creates, then the sentinels."""
    merge = {"Content-Type": "application/merge-patch+json"}
    fresh = [w for w in writes if w["metadata"]["name"].startswith(("churn-", "node-churn"))]
    changed = [w for w in writes if w not in fresh]
    with kube.http_client() as c:
        for path, body, _ in kubernetes_objects(deletes):
            if body["kind"] in ("Namespace", "ServiceAccount"):
                continue
            r = c.delete(f"{path}/{body['metadata']['name']}", params={"gracePeriodSeconds": 0})
            assert r.status_code in (200, 202), r.text
        for path, body, _ in kubernetes_objects(changed):
            if body["kind"] in ("Namespace", "ServiceAccount"):
                continue
            patch: dict[str, Any] = {"metadata": {"labels": body["metadata"].get("labels")}}
            if body["kind"] != "Pod":
                patch["spec"] = body.get("spec")
            r = c.patch(f"{path}/{body['metadata']['name']}", json=patch, headers=merge)
            assert r.status_code == 200, r.text
    load_kubernetes(kube, fresh)
    load_kubernetes(kube, sentinel_resources())


@pytest.mark.usefixtures("calico_binaries")
@pytest.mark.parametrize("datastore", ["etcd", "kubernetes"])
def test_value_parity_through_churn(
    datastore: str,
    etcd_factory: EtcdFactory,
    calico_kube_factory: KubeFactory,
    tmp_path: Path,
) -> None:
    """Both Typhas up on one datastore with Calico's client connected to each for every syncer
    type; deletes, relabels, updates and creates, then the sentinel; the dumps (with the update
    types and the new revisions) must be equal."""
    base = [*extended(), *cluster(CHURN_SEED)]
    writes, deletes = churn(base)
    assert len(writes) > 10 and len(deletes) > 5
    if datastore == "etcd":
        store: dict[str, Any] = {"etcd": etcd_factory()}
        load_etcd(store["etcd"], base)
        expected = EXPECTED_KINDS_ETCD
    else:
        store = {"kube": calico_kube_factory()}
        base = [*kubernetes_extended(), *cluster(CHURN_SEED)]
        load_kubernetes(store["kube"], base)
        expected = EXPECTED_KINDS_KDD

    binary = find_syncdump()
    assert binary
    syncdump_cmd = [binary, "-timeout", "60s"]
    with CalicoTypha(**store) as go, TyphaPy(**store) as ours:
        procs = {
            (side, s): subprocess.Popen(
                [*syncdump_cmd, "-addr", t.address, "-type", s, "-sentinel", SENTINELS[s]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for side, t in (("go", go), ("ours", ours))
            for s in SYNCER_TYPES
        }
        try:
            # Clients in sync on the old content first (the sentinel is not there yet, so none
            # can have dumped); then the churn reaches them as deltas (checked below).
            time.sleep(3.0)
            assert all(p.poll() is None for p in procs.values()), "dumped before the sentinel"
            if datastore == "etcd":
                churn_etcd(store["etcd"], writes, deletes)
            else:
                churn_kubernetes(store["kube"], writes, deletes)
            results = {k: p.communicate(timeout=60) for k, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
    for k, p in procs.items():
        assert p.returncode == 0, f"{k}: {results[k][1][-2000:]}"
    dumps = {k: json.loads(out) for k, (out, _) in results.items()}
    go_dumps = {s: dumps["go", s] for s in SYNCER_TYPES}
    our_dumps = {s: dumps["ours", s] for s in SYNCER_TYPES}
    updated = [e for e in go_dumps["felix"]["kvs"] if e["update_type"] == "updated"]
    assert len(updated) >= 5, "the churn reached Calico's client as updates"
    gone = {d["metadata"]["name"] for d in deletes}
    assert not any(e["key"].rsplit("/", 1)[-1] in gone for e in go_dumps["felix"]["kvs"])
    check_parity(datastore, go_dumps, our_dumps, with_extra(expected), tmp_path, "-churn")
