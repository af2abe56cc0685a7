"""Real Felix on random clusters: the same dataplane from typha-py as from Calico Typha, and
felix_client's dataplane differing from Felix's only where expected_felix_client_diff.yaml says.

Each cluster is config/examples (nodes, pool, blocks, profiles, the policy active on node1) plus
`tests/calico/randv3.cluster(seed)`: a tier, global and namespaced policies with random
selectors and rules (every selector operator, nets, ports, named ports, ICMP, negations, service
accounts, Log/Pass/Deny/Allow), network sets, host endpoints and WorkloadEndpoints on all three
nodes, those of node1 with veths.  Host endpoints get interface names that do not exist on the
node: on the node's eth0 one would put Felix's own Typha and etcd traffic (random ports, not the
failsafe ones) behind host-endpoint policy.

`make test` runs one fixed seed; `make fuzz` runs `TYPHA_FELIX_CLUSTERS` seeds from a random
base (`TYPHA_FELIX_SEED` replays one; the seed is in the test id).
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.calico.randv3 import cluster
from tests.felix import datasets, snapshot, verdicts
from tests.felix.controls import assert_programmed
from tests.felix.lab import NODE_NAME, FelixLab
from tests.peers.felix import Felix

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 180
EXPECTED_CLIENT_DIFF = Path(__file__).with_name("expected_felix_client_diff.yaml")
RANDOM_CLIENT_DIFF = Path(__file__).with_name("expected_felix_client_diff_random.yaml")


def _seeds() -> list[int]:
    count = int(os.environ.get("TYPHA_FELIX_CLUSTERS", "1"))
    base = os.environ.get("TYPHA_FELIX_SEED")
    if base is None:
        base = "11" if count == 1 else str(random.SystemRandom().randrange(1 << 30))
    return [int(base) + i for i in range(count)]


SEEDS = _seeds()


def resources_for(seed: int) -> list[dict[str, Any]]:
    rand = cluster(seed, endpoints=24, policies=12)
    for r in rand:
        if r["kind"] == "HostEndpoint":
            r["spec"]["interfaceName"] = f"hepx{r['metadata']['name'][3:]}"
    return [*datasets.examples(), *rand]


def local_endpoints(resources: list[dict[str, Any]]) -> dict[str, str]:
    return {
        r["spec"]["interfaceName"]: r["spec"]["ipNetworks"][0].split("/")[0]
        for r in resources
        if r["kind"] == "WorkloadEndpoint" and r["spec"]["node"] == NODE_NAME
    }


def all_ips(resources: list[dict[str, Any]]) -> set[str]:
    """Workload and host-endpoint addresses and one address in each network set."""
    ips = set()
    for r in resources:
        spec = r.get("spec") or {}
        ips.update(n.split("/")[0] for n in spec.get("ipNetworks", ()))
        ips.update(spec.get("expectedIPs", ()))
        if r["kind"] == "GlobalNetworkSet":
            ips.update(n.split("/")[0][:-1] + "7" for n in spec["nets"])
    return ips


def local_interfaces(resources: list[dict[str, Any]]) -> set[str]:
    return {
        r["spec"]["interfaceName"]
        for r in resources
        if r["kind"] == "WorkloadEndpoint" and r["spec"]["node"] == NODE_NAME
    }


def program(lab: FelixLab, typha_kind: str, resources: list[dict]) -> tuple[Felix, Any]:
    lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    typha = lab.calico_typha(etcd) if typha_kind == "calico" else lab.typha_py(etcd)
    felix = lab.felix(etcd, typha)
    return felix, lab.snapshot()


def assert_random_programmed(felix: Felix, snap: snapshot.Snapshot, resources: list) -> None:
    assert_programmed(felix, snap)
    chains = snap.chains()
    for iface in local_interfaces(resources):
        assert {f"cali-tw-{iface}", f"cali-fw-{iface}"} <= chains, iface


@pytest.mark.parametrize("seed", SEEDS)
def test_random_cluster_same_from_typha_py_as_from_calico_typha(
    felix_lab: FelixLab, seed: int
) -> None:
    resources = resources_for(seed)
    felix, from_go = program(felix_lab, "calico", resources)
    assert_random_programmed(felix, from_go, resources)
    felix_lab.fresh_node(felix)
    for peer in list(felix_lab._peers):
        felix_lab.stop(peer)
    felix, from_py = program(felix_lab, "typha-py", resources)
    assert_random_programmed(felix, from_py, resources)
    assert snapshot.diff(from_go, from_py) == [], f"seed {seed}"


def unexplained(changes: list[str], entries: list[dict[str, str]]) -> list[str]:
    import re

    patterns = [re.compile(e["pattern"]) for e in entries]
    return [c for c in changes if not any(p.search(c) for p in patterns)]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_cluster_felix_judges_felix_client(felix_lab: FelixLab, seed: int) -> None:
    """Every difference between felix_client's dataplane and Felix's on a random cluster is one
    the examples' expected-diff file explains, or one of the random-cluster file (the kinds of
    difference only random clusters reach).  Stale entries are checked on the examples only: a
    random cluster need not reach every kind of difference."""
    resources = resources_for(seed)
    lab = felix_lab
    lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    typha = lab.typha_py(etcd)
    ours = subprocess.run(
        ["ip", "netns", "exec", lab.node, sys.executable, "-m", "felix_client.cli", "run",
         "--node", "node1", "--typha", typha.address, "--netns", lab.node,
         "--metrics-port", "0", "--status-interval", "0", "--duration", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-2000:]
    from_client = lab.snapshot()
    for iface in local_interfaces(resources):  # positive control on our side
        assert {f"cali-tw-{iface}", f"cali-fw-{iface}"} <= from_client.chains(), iface
    lab.fresh_node_without_felix()
    lab.add_workload_interfaces(resources)
    felix = lab.felix(etcd, typha)
    from_felix = lab.snapshot()
    assert_random_programmed(felix, from_felix, resources)
    changes = snapshot.diff(
        snapshot.sets_by_content(from_client), snapshot.sets_by_content(from_felix), meaning=True
    )
    entries = [
        *yaml.safe_load(EXPECTED_CLIENT_DIFF.read_text()),
        *yaml.safe_load(RANDOM_CLIENT_DIFF.read_text()),
    ]
    new = unexplained(changes, entries)
    # The meaning check behind the policy-rendering entries: same verdicts for random packets.
    endpoints, peers = local_endpoints(resources), all_ips(resources)
    wrong = verdicts.differing_verdicts(from_client, from_felix, endpoints, peers, seed=seed)
    print(
        f"\nseed {seed}: {len(changes)} text differences; verdicts compared "
        f"on {len(endpoints)} endpoints x 2 chains x 200 packets"
    )
    assert not wrong, f"seed {seed}: verdicts differ:\n" + "\n".join(wrong[:20])
    assert not new, f"seed {seed}: new differences from Felix:\n" + "\n".join(new)
    # Negative control: a dataplane that lets everything into nginx (whose policy drops most
    # of the random packets) is told apart.
    broken = copy.deepcopy(from_felix)
    broken.iptables["filter"]["cali-tw-calia53571dc704"] = ("-j ACCEPT",)
    assert verdicts.differing_verdicts(from_client, broken, endpoints, peers, seed=seed)
