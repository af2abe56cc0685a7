"""Calico's own Typha as a peer: Calico's client library (via syncdump) reaches in-sync from it on
all four syncer types, on etcd and on a real kube-apiserver, and sees every kind of key the
config/examples cluster produces.  These dumps are the reference the value-model comparison
(tests/calico/test_value_parity.py) holds our Typha to.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.calico.compare import key_kind
from tests.calico.conftest import KubeFactory
from tests.calico.datasets import examples, load_etcd, load_kubernetes
from tests.peers.calico_typha import SYNCER_TYPES, CalicoTypha, syncdump
from tests.peers.plugin import EtcdFactory
from tests.peers.process import PeerError

# The key kinds Calico Typha sends for config/examples, per syncer type, as observed from Go
# Typha at the tarball's commit.  "Every expected kind appears" is the positive control that
# the dataset exercises the whole model.
EXPECTED_KINDS_ETCD = {
    "felix": {
        "WorkloadEndpoint",
        "Policy",
        "Tier",
        "ProfileRules",
        "ProfileLabels",
        "IPPool",
        "Block",
        "HostConfig",
        "GlobalConfig",
        "ReadyFlag",
        "Resource:nodes",
        "Resource:profiles",
    },
    "bgp": {"IPPool", "BlockAffinity", "Resource:nodes"},
    "tunnel-ip-allocation": {"IPPool", "Resource:nodes"},
    "node-status": set(),
}
EXPECTED_KINDS_KDD = {
    **EXPECTED_KINDS_ETCD,
    "felix": EXPECTED_KINDS_ETCD["felix"] | {"Resource:kubernetesservice"},
}


def kinds_of(dump: dict) -> Counter[str]:
    return Counter(key_kind(e["key"]) for e in dump["kvs"])


def check_dumps(typha: CalicoTypha, expected: dict[str, set[str]]) -> dict[str, dict]:
    dumps = {}
    for syncer in SYNCER_TYPES:
        dump = syncdump(typha.address, syncer, timeout=60)
        assert dump["syncer_type"] == syncer
        assert dump["status"] == "in-sync"
        errors = [e for e in dump["kvs"] if e.get("error")]
        assert not errors, errors
        kinds = kinds_of(dump)
        missing = expected[syncer] - set(kinds)
        assert not missing, f"{syncer}: no {sorted(missing)} in {dict(kinds)}"
        dumps[syncer] = dump
    return dumps


@pytest.mark.usefixtures("calico_binaries")
def test_go_typha_on_etcd_serves_every_syncer_type(etcd_factory: EtcdFactory) -> None:
    etcd = etcd_factory()
    load_etcd(etcd, examples())
    with CalicoTypha(etcd=etcd) as typha:
        dumps = check_dumps(typha, EXPECTED_KINDS_ETCD)
    felix = {e["key"]: e for e in dumps["felix"]["kvs"]}
    # Values are libcalico-go's re-serialization and carry the wire's extra fields.
    wep = next(e for k, e in felix.items() if key_kind(k) == "WorkloadEndpoint")
    assert '"ipv4_nets":["192.168.' in wep["value"]
    assert wep["update_type"] == "new" and int(wep["revision"]) > 0
    # On etcd the v3 objects carry no resourceVersion, so V3ResourceVersion is empty; the
    # synthetic default-allow profile has revision 1 (Kubernetes: see the next test).
    node = next(e for k, e in felix.items() if key_kind(k) == "Resource:nodes")
    assert node["v3_resource_version"] == "" and int(node["revision"]) > 1
    allow = felix["/calico/v1/policy/profile/projectcalico-default-allow/rules"]
    assert allow["revision"] == "1"


@pytest.mark.usefixtures("calico_binaries")
def test_go_typha_on_kubernetes_serves_every_syncer_type(
    calico_kube_factory: KubeFactory,
) -> None:
    kube = calico_kube_factory()
    load_kubernetes(kube, examples())
    with CalicoTypha(kube=kube) as typha:
        dumps = check_dumps(typha, EXPECTED_KINDS_KDD)
    weps = [e for e in dumps["felix"]["kvs"] if key_kind(e["key"]) == "WorkloadEndpoint"]
    assert len(weps) == 5, [e["key"] for e in weps]
    # Kubernetes objects do carry a resourceVersion: the wire moves it to V3ResourceVersion.
    node = next(e for e in dumps["felix"]["kvs"] if key_kind(e["key"]) == "Resource:nodes")
    assert node["v3_resource_version"] and node["v3_resource_version"] == node["revision"]


@pytest.mark.usefixtures("calico_binaries")
def test_syncdump_waits_for_a_sentinel_value_after_churn(etcd_factory: EtcdFactory) -> None:
    """The barrier the differential tests use: after a change, dump only once the sentinel key
    has the new value (so everything written before it is in the dump too)."""
    import subprocess
    import time

    from tests.peers.calico_typha import find_syncdump
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_writer import apply_resources

    etcd = etcd_factory()
    load_etcd(etcd, examples())
    sentinel = "/calico/v1/config/LogPrefix"

    def felix_config(prefix: str, severity: str) -> dict:
        return {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"logPrefix": prefix, "logSeverityScreen": severity},
        }

    async def write(prefix: str, severity: str) -> None:
        async with EtcdClient([etcd.client_url]) as client:
            await apply_resources(client, [felix_config(prefix, severity)])

    import trio

    with CalicoTypha(etcd=etcd) as typha:
        trio.run(write, "round-1", "Info")
        binary = find_syncdump()
        assert binary
        cmd = [binary, "-addr", typha.address, "-type", "felix", "-timeout", "30s"]
        proc = subprocess.Popen(
            [*cmd, "-sentinel", sentinel, "-sentinel-value", "round-2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1.0)
            assert proc.poll() is None, "dumped before the sentinel had its value"
            # Churn first, then the sentinel in a later write: Typha may split one write's keys
            # over several messages, so only a later write is a barrier.
            trio.run(write, "round-1", "Debug")
            trio.run(write, "round-2", "Debug")
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
    kvs = {e["key"]: e for e in json.loads(out)["kvs"]}
    assert kvs[sentinel]["value"] == "round-2"
    assert kvs["/calico/v1/config/LogSeverityScreen"]["value"] == "Debug"
    assert kvs[sentinel]["update_type"] == "updated"


@pytest.mark.usefixtures("calico_binaries")
def test_syncdump_with_calicos_tls_options(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    """mTLS as Felix does it: client cert, CA and the server's expected CN; Typha checks the
    client's CN.  A client whose CN Typha does not expect is refused (same launcher, same data)."""
    from tests.peers.calico_typha import ClientTLS, TyphaTLS
    from tests.peers.pki import TestCA

    ca = TestCA(tmp_path)
    s_cert, s_key = ca.issue("server", "typha-server", ips=["127.0.0.1"], server=True)
    c_cert, c_key = ca.issue("client", "typha-client", client=True)
    x_cert, x_key = ca.issue("intruder", "someone-else", client=True)
    etcd = etcd_factory()
    load_etcd(etcd, examples())
    tls = TyphaTLS(str(s_cert), str(s_key), str(ca.cert_path), client_cn="typha-client")
    with CalicoTypha(etcd=etcd, tls=tls) as typha:
        good = ClientTLS(str(c_key), str(c_cert), str(ca.cert_path), server_cn="typha-server")
        dump = syncdump(typha.address, "felix", tls=good, timeout=30)
        assert dump["status"] == "in-sync" and len(dump["kvs"]) > 30
        bad = ClientTLS(str(x_key), str(x_cert), str(ca.cert_path), server_cn="typha-server")
        with pytest.raises(PeerError):
            syncdump(typha.address, "felix", tls=bad, timeout=5)
