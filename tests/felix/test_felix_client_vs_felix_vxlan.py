"""Felix judges felix_client on a VXLAN cluster: the same data (config/examples made a VXLAN
cluster, as in test_felix_packets_vxlan.py) given to real calico-felix and to felix_client on
fresh node1 namespaces, and their dataplanes diffed by meaning.

Every difference must be one expected_felix_client_diff.yaml (the non-VXLAN comparison's file)
or expected_felix_client_diff_vxlan.yaml (differences only VXLAN data reach) explains; an entry
of the VXLAN file that explains nothing is stale and fails the test.  The base file's entries
are checked for staleness by test_felix_peer.py (VXLAN data need not reach them all).

Positive controls: both sides programmed node1's endpoint chains and the VXLAN shapes the
comparison is about (the route to node3's block through vxlan.calico, the direct route to
node2's block in node1's subnet, the set of VXLAN peers referenced from cali-INPUT).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.felix import snapshot
from tests.felix.controls import assert_programmed
from tests.felix.lab import FelixLab
from tests.felix.test_felix_packets_vxlan import NODE3, VTEPS, vxlan_cluster
from tests.felix.test_felix_peer import EXPECTED_CLIENT_DIFF, unexplained

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 120
VXLAN_CLIENT_DIFF = Path(__file__).with_name("expected_felix_client_diff_vxlan.yaml")
VXLAN_ROUTE = f"192.168.88.0/26 via {VTEPS[NODE3][0]} dev vxlan.calico "
DIRECT_ROUTE = "192.168.91.0/26 via 10.0.0.12 dev eth0 "


def assert_vxlan_programmed(snap: snapshot.Snapshot) -> None:
    """node1's VXLAN shapes: the tunnelled and the direct remote-block routes, and the VXLAN
    accept rule in cali-INPUT matching on a set that holds node3's address."""
    assert any(r.startswith(VXLAN_ROUTE) for r in snap.routes), sorted(snap.routes)
    assert any(r.startswith(DIRECT_ROUTE) for r in snap.routes), sorted(snap.routes)
    vxlan_accept = [
        r for r in snap.iptables["filter"]["cali-INPUT"] if "--dports 4789" in r and "ACCEPT" in r
    ]
    assert vxlan_accept, snap.iptables["filter"]["cali-INPUT"]
    set_name = vxlan_accept[0].split("--match-set ")[1].split()[0]
    assert "10.0.1.13" in snap.ipsets[set_name][1], snap.ipsets.get(set_name)


def test_felix_judges_felix_client_on_vxlan(felix_lab: FelixLab, tmp_path: Path) -> None:
    lab = felix_lab
    resources = vxlan_cluster()
    lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    typha = lab.typha_py(etcd)
    ours = subprocess.run(
        ["ip", "netns", "exec", lab.node, sys.executable, "-m", "felix_client.cli", "run",
         "--node", "node1", "--typha", typha.address, "--netns", lab.node,
         "--metrics-port", "0", "--status-interval", "0", "--duration", "4"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-2000:]
    from_client = lab.snapshot()
    assert {"cali-tw-calia53571dc704", "cali-fw-cali8b75868d7bb"} <= from_client.chains()
    assert_vxlan_programmed(from_client)
    lab.fresh_node_without_felix()
    lab.add_workload_interfaces(resources)
    felix = lab.felix(etcd, typha)
    felix.wait_until(
        lambda: any(r.startswith(VXLAN_ROUTE) for r in lab.snapshot().routes), 10, "VXLAN route"
    )
    from_felix = lab.snapshot()
    assert_programmed(felix, from_felix)
    assert_vxlan_programmed(from_felix)
    changes = snapshot.diff(from_client, from_felix, meaning=True)
    base = yaml.safe_load(EXPECTED_CLIENT_DIFF.read_text())
    vxlan = yaml.safe_load(VXLAN_CLIENT_DIFF.read_text()) or []
    new = [c for c in changes if c in unexplained(changes, [*base, *vxlan])[0]]
    stale = unexplained(changes, vxlan)[1]
    print(f"\n{len(changes)} differences on VXLAN data:\n" + "\n".join(changes))
    assert not new, "new differences from Felix on VXLAN data:\n" + "\n".join(new)
    assert not stale, f"stale entries in {VXLAN_CLIENT_DIFF.name}: {stale}"
    # Negative controls: a new VXLAN difference is caught, and so is a stale VXLAN entry.
    extra = "+ route 192.168.88.0/26 via 192.168.88.0 dev vxlan.calico onlink mtu 1400"
    assert unexplained([*changes, extra], [*base, *vxlan])[0]
    assert unexplained(changes, [*vxlan, {"pattern": "^never$", "reason": "-"}])[1]
