"""Real packets against the classic "block the cloud metadata service" policy, node1 programmed
by real calico-felix from typha-py (and from Calico Typha, and by our felix_client, to the same
verdicts).

The metadata service is a netprobe listener (TCP 80, 81) in the control namespace, which holds
169.254.169.254/32 and, as the positive control on the same path, 169.254.169.253/32 as extra
addresses on its end of node1's link; node1's default route leads there, so a pod's packets to
either address leave through node1's forward path (the pod's from-workload chain), then its eth0.
The control namespace also routes node1's block back to node1, so an answer does not depend on
the pool's natOutgoing (with it the listener sees the node's address, without it the pod's).

The data are config/examples (plus nginx-from-frontend) and a tier "security" ahead of the
default one, holding `security.block-cloud-metadata`: every endpoint's egress to
169.254.169.254/32 denied, everything else Passed on to the default tier.  Pass, not Allow: an
Allow-all in the default tier at order 1 would end the tier for every packet and skip every
later egress rule of that tier; in a tier of its own the rest is judged exactly as without it,
which the examples' own verdicts (frontend -> nginx 80 allowed, 81 denied) show in the test.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.nstools import run
from tests.felix import datasets, snapshot
from tests.felix.controls import assert_programmed
from tests.felix.lab import CTL_IP, NODE_IP, FelixLab
from tests.felix.netns import entered
from tests.felix.test_felix_packets_tiers import v3
from tests.felix.test_felix_packets_vxlan import (
    FRONTEND1,
    IFACE,
    NGINX1,
    PROGRAMS,
    exchange,
    felix_client,
    servers,
    wait_for,
)
from tests.peers.felix import NsEtcd
from typha.sync.convert import etcd_key_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 180  # a loaded machine; each verdict flip itself is bounded at 10 s

METADATA_IP = "169.254.169.254"
OTHER_IP = "169.254.169.253"  # next to it, same namespace and path: the /32 is exact
NODE1_BLOCK = "192.168.162.128/26"
DROP_MARK = "0x40000"  # Felix's default drop mark (MarkDrop)
SECURITY_TIER = v3("Tier", "security", {"order": 100})
BLOCK_METADATA = v3(
    "GlobalNetworkPolicy",
    "security.block-cloud-metadata",
    {
        "tier": "security",
        "order": 1,
        "selector": "all()",
        "types": ["Egress"],
        "egress": [
            {"action": "Deny", "destination": {"nets": [f"{METADATA_IP}/32"]}},
            {"action": "Pass"},
        ],
    },
)

ALLOW, DENY = True, False
# (source pod, destination, TCP port, verdict, why); each deny next to an allow over the same
# path.
MATRIX = [
    (FRONTEND1, METADATA_IP, 80, DENY, "metadata blocked for every pod"),
    (FRONTEND1, OTHER_IP, 80, ALLOW, "same path, next address: Pass -> profile allow"),
    (NGINX1, METADATA_IP, 80, DENY, "metadata blocked for nginx too (selector all())"),
    (NGINX1, OTHER_IP, 80, ALLOW, "same path from nginx"),
    (FRONTEND1, NGINX1, 80, ALLOW, "the examples' verdicts unchanged: nginx-from-frontend"),
    (FRONTEND1, NGINX1, 81, DENY, "the examples' verdicts unchanged: end of default tier"),
]


def answered(reply: str, src: str) -> bool:
    """An exchange was answered: the listener saw the pod (no NAT) or node1 (natOutgoing)."""
    return reply in (src, NODE_IP)


def metadata_answers(ns: str, src: str) -> bool:
    return answered(exchange(ns, METADATA_IP, 80, timeout=0.2), src)


def metadata_rules(snap: snapshot.Snapshot) -> dict[str, tuple[str, ...]]:
    """Outbound policy chains (`cali-po-*`) with a rule matching 169.254.169.254/32."""
    return {
        chain: rules
        for chain, rules in snap.iptables.get("filter", {}).items()
        if chain.startswith("cali-po-") and any(f"-d {METADATA_IP}/32 " in r for r in rules)
    }


def assert_denies(rules: tuple[str, ...]) -> None:
    """The metadata match is a Deny as both programs render it: it sets the drop mark, and the
    next rule drops what carries that mark (rule comments aside)."""
    rules = snapshot.without_comments(rules)
    at = next(i for i, r in enumerate(rules) if f"-d {METADATA_IP}/32 " in r)
    assert rules[at].endswith(f"--set-xmark {DROP_MARK}/{DROP_MARK}"), rules
    assert rules[at + 1] == f"-m mark --mark {DROP_MARK}/{DROP_MARK} -j DROP", rules


def metadata_service(lab: FelixLab) -> None:
    """The two addresses on the control namespace's end of node1's link, and its route back
    to node1's block (node1 already routes by default to the control namespace)."""
    for ip in (METADATA_IP, OTHER_IP):
        run(["ip", "-n", lab.ctl, "addr", "add", f"{ip}/32", "dev", "eth0"])
    run(["ip", "-n", lab.ctl, "route", "add", NODE1_BLOCK, "via", NODE_IP])
    assert f"default via {CTL_IP}" in run(["ip", "-n", lab.node, "route"]).stdout


def delete(lab: FelixLab, etcd: NsEtcd, resource: dict[str, Any]) -> None:
    with entered(lab.ctl):
        etcd.delete(etcd_key_for(resource))


@pytest.mark.parametrize("program", PROGRAMS)
def test_cloud_metadata_blocked(felix_lab: FelixLab, program: str, tmp_path: Path) -> None:
    """The same verdicts whichever program, from whichever Typha, programmed node1."""
    lab = felix_lab
    resources = [*datasets.examples(), SECURITY_TIER, BLOCK_METADATA]
    pods = lab.add_workload_namespaces(resources)
    pod_ns = {ip: pods[IFACE[ip]] for ip in (NGINX1, FRONTEND1)}
    metadata_service(lab)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    typha = lab.calico_typha(etcd) if program.endswith("calico-typha") else lab.typha_py(etcd)
    client: subprocess.Popen[bytes] | None = None
    with servers([lab.ctl, pod_ns[NGINX1]]):
        try:
            if program.startswith("felix/"):
                felix = lab.felix(etcd, typha)
            else:
                client = felix_client(lab, "node1", typha.address, tmp_path / "felix_client.log")
            # Positive controls: the policy's Deny rule for the metadata address is in an
            # outbound policy chain, reached from each pod's from-workload chain.
            wait_for(lambda: bool(metadata_rules(lab.snapshot())), 30,
                     "outbound policy chain matching the metadata address")  # fmt: skip
            snap = lab.snapshot()
            if program.startswith("felix/"):
                assert_programmed(felix, snap)
            rules = metadata_rules(snap)
            assert len(rules) == 1, rules
            (chain, chain_rules), = rules.items()  # fmt: skip
            assert_denies(chain_rules)
            for ip in (NGINX1, FRONTEND1):
                fw = snap.iptables["filter"][f"cali-fw-{IFACE[ip]}"]
                assert any(chain in r for r in fw), fw
            # Workload routes too: the first answer between the pods (polled up to 10 s).
            first = wait_for(lambda: answered(exchange(pod_ns[FRONTEND1], NGINX1, 80, 0.2),
                                              FRONTEND1), 10, "first answer")  # fmt: skip
            verdicts = [exchange(pod_ns[src], dst, port) for src, dst, port, _, _ in MATRIX]
            bad = [
                f"{src} -> {dst}:{port} want {'allow' if want else 'deny'} got {got} ({why})"
                for (src, dst, port, want, why), got in zip(MATRIX, verdicts, strict=True)
                if not (answered(got, src) if want else got == "timeout")
            ]
            assert not bad, "\n".join(bad)
            # The policy deleted: the metadata address answers (polled up to 10 s) ...
            t0 = time.monotonic()
            delete(lab, etcd, BLOCK_METADATA)
            wait_for(lambda: metadata_answers(pod_ns[FRONTEND1], FRONTEND1), 10,
                     "metadata answering after the delete")  # fmt: skip
            opened = time.monotonic() - t0
            wait_for(lambda: not metadata_rules(lab.snapshot()), 10, "policy chain withdrawn")
            assert answered(exchange(pod_ns[NGINX1], METADATA_IP, 80), NGINX1)
            # ... and the policy back: denied again (polled up to 10 s), the control still open.
            t0 = time.monotonic()
            lab.load(etcd, [BLOCK_METADATA])
            wait_for(lambda: exchange(pod_ns[FRONTEND1], METADATA_IP, 80) == "timeout", 10,
                     "metadata denied after the policy is back")  # fmt: skip
            closed = time.monotonic() - t0
            assert answered(exchange(pod_ns[FRONTEND1], OTHER_IP, 80), FRONTEND1)
            seen = exchange(pod_ns[FRONTEND1], OTHER_IP, 80)
            print(
                f"\n{program}: chain seen -> first answer {first:.3f}s;"
                f" policy deleted -> metadata answered {opened:.3f}s;"
                f" policy back -> denied {closed:.3f}s; the listener saw {seen}"
            )
        finally:
            if client is not None:
                client.kill()
                client.wait()
    if client is not None:
        assert client.returncode == -9, client.returncode  # ran until killed, no crash
