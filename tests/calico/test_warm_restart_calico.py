"""After a warm restart from its cache file, typha-py sends Calico's clients the same per-KV
Revision, V3ResourceVersion and UpdateType as before the restart (the file keeps them), on etcd
and on a real kube-apiserver; a cache file of the previous format (without them) is logged and
Typha starts cold, with the same result from a full list.

Calico's own client reads both sides (syncdump). On etcd a warm start lists nothing (it watches
from the saved revision), so every unchanged key's revision can only come from the file; on
Kubernetes the relist finds the same values and keeps the stored revisions, as Go's no-op check
does, so there too they come from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.calico.conftest import KubeFactory
from tests.calico.datasets import examples, load_etcd, load_kubernetes
from tests.calico.ourside import TyphaPy
from tests.peers.calico_typha import syncdump
from tests.peers.plugin import EtcdFactory

SYNCERS = ("felix", "bgp", "tunnel-ip-allocation")
ADDED_WHILE_DOWN = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "added-while-down"},
    "spec": {"selector": "all()", "order": 5, "ingress": [{"action": "Allow"}]},
}


def dumps(typha: TyphaPy) -> dict[str, dict[str, dict[str, Any]]]:
    out = {}
    for syncer in SYNCERS:
        dump = syncdump(typha.address, syncer, timeout=60)
        assert dump["status"] == "in-sync"
        out[syncer] = {e["key"]: e for e in dump["kvs"]}
    return out


def this_run_log(typha: TyphaPy) -> str:
    return typha.log_path.read_text(errors="replace").split("=== start:")[-1]


def as_version_1(path: Path) -> None:
    """Rewrite the cache file as the previous format wrote it (no per-KV metadata)."""
    saved = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    saved["version"] = 1
    for view in saved["views"].values():
        view["state"] = [row[:4] for row in view["state"]]
        view["crumbs"] = [row[:8] for row in view["crumbs"]]
    path.write_bytes(msgpack.packb(saved, use_bin_type=True))


def check_restarts(typha: TyphaPy, cache: Path, add: Callable[[], None], kube: bool) -> None:
    typha.start()
    before = dumps(typha)
    felix = before["felix"]
    # Positive control: there is metadata to lose. Every key has a revision; on Kubernetes the
    # v3 resources (other than profiles) carry their resourceVersion as V3ResourceVersion.
    assert all(e["revision"] for d in before.values() for e in d.values())
    v3 = [e for k, e in felix.items() if "/resources/v3/" in k and "/profiles/" not in k]
    assert v3 and all(bool(e["v3_resource_version"]) == kube for e in v3), v3
    assert {e["update_type"] for d in before.values() for e in d.values()} == {"new"}

    typha.stop()  # SIGTERM: drain, then the clean save
    assert cache.is_file()
    add()  # while Typha is down
    typha.start()
    assert "warm restart: cache loaded" in this_run_log(typha)
    after = dumps(typha)
    added = {k for k in after["felix"] if k not in felix}
    assert added, "the change made while Typha was down is missing"
    revisions = [e["revision"] for d in before.values() for e in d.values()]
    newest = max(int(r) for r in revisions if r.isdigit())  # ("n/m": a profile's pair)
    assert all(int(after["felix"][k]["revision"]) > newest for k in added)
    for syncer in SYNCERS:
        unchanged = {k: e for k, e in after[syncer].items() if k not in added}
        assert unchanged == before[syncer], syncer

    # A file of the previous format: logged, cold start, and the same from the full list.
    typha.stop()
    as_version_1(cache)
    typha.start()
    log = this_run_log(typha)
    assert "cache file has an older format; starting cold" in log
    assert "warm restart: cache loaded" not in log
    assert dumps(typha) == after


@pytest.mark.usefixtures("calico_binaries")
def test_warm_restart_keeps_calicos_metadata_on_etcd(
    etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    etcd = etcd_factory()
    load_etcd(etcd, examples())
    cache = tmp_path / "typha-cache.msgpack"
    with TyphaPy(etcd=etcd, extra_env={"TYPHA_CACHEFILEPATH": str(cache)}) as typha:
        check_restarts(typha, cache, lambda: load_etcd(etcd, [ADDED_WHILE_DOWN]), kube=False)


@pytest.mark.usefixtures("calico_binaries")
def test_warm_restart_keeps_calicos_metadata_on_kubernetes(
    calico_kube_factory: KubeFactory, tmp_path: Path
) -> None:
    kube = calico_kube_factory()
    load_kubernetes(kube, examples())
    cache = tmp_path / "typha-cache.msgpack"
    with TyphaPy(kube=kube, extra_env={"TYPHA_CACHEFILEPATH": str(cache)}) as typha:
        check_restarts(typha, cache, lambda: load_kubernetes(kube, [ADDED_WHILE_DOWN]), kube=True)
