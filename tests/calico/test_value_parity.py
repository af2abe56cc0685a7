"""Value-model parity: on the same datastore content (config/examples plus
tests/calico/extra_resources.yaml and a seeded random cluster), typha-py sends the key/value set
Calico Typha sends, on all four syncer types, on etcd and on a real kube-apiserver.

Calico Typha's side is dumped by syncdump (Calico's own client library); ours by our msgpack node
client, run through libcalico-go's ParseValue/SerializeValue (`syncdump -reserialize`), so the
comparison is in Go's canonical form and a value Go cannot parse is a difference too.  Every
difference must be listed in expected_diffs.yaml with its reason; an entry that no longer matches
fails the test as well.  The same comparison takes syncdump dumps of typha-py once it speaks
Calico's wire (then revision and update type are compared too).

Go Typha runs first and is stopped before ours starts: ours sees what Go wrote at start-up (the
tiers) exactly as a second replica would, and the two never run at once on 2 cores.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.calico.compare import (
    Difference,
    compare,
    key_kind,
    load_allowlist,
    render_markdown,
    split_allowed,
    summarize,
)
from tests.calico.conftest import KubeFactory
from tests.calico.datasets import extended, kubernetes_extended, load_etcd, load_kubernetes
from tests.calico.ourside import TyphaPy, msgpack_dump
from tests.calico.randv3 import cluster
from tests.calico.test_calico_typha import EXPECTED_KINDS_ETCD, EXPECTED_KINDS_KDD
from tests.peers.calico_typha import SYNCER_TYPES, CalicoTypha, reserialize, syncdump
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


def msgpack_dumper(address: str, syncer_type: str, work: Path) -> dict[str, Any]:
    """Our side today: our msgpack client's state, in libcalico-go's form."""
    return reserialize(msgpack_dump(address, syncer_type), work)


def gob_dumper(address: str, syncer_type: str, work: Path) -> dict[str, Any]:
    """Our side once typha-py speaks Calico's wire: Calico's own client, like Go's side (then
    revision and update type are compared too)."""
    del work
    return syncdump(address, syncer_type)


def dumps_of_both(
    store: dict[str, Any], work: Path, our_dumper: OurDumper = msgpack_dumper
) -> tuple[dict, dict]:
    with CalicoTypha(**store) as go:
        go_dumps = {s: syncdump(go.address, s) for s in SYNCER_TYPES}
    with TyphaPy(**store) as ours:
        our_dumps = {s: our_dumper(ours.address, s, work) for s in SYNCER_TYPES}
    return go_dumps, our_dumps


def check_parity(
    datastore: str, go_dumps: dict, our_dumps: dict, expected_kinds: dict, work: Path
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
    report_dir = os.environ.get("TYPHA_CALICO_REPORT_DIR")
    (Path(report_dir) if report_dir else work).joinpath(f"parity-{datastore}.md").write_text(report)
    unexpected, _ = split_allowed(diffs, allow, datastore)
    stale = [a for a in allow if a.hits == 0 and (a.datastore is None or a.datastore == datastore)]
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
