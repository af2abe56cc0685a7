"""Real packets through tiers, policed by real Felix programmed from typha-py (and from Calico
Typha, to the same verdicts): the tier Pass case the felix_client packet suite runs, with the
same verdicts, plus Log before Deny.

On node1 the frontend pod talks TCP to nginx.  A "security" tier, ahead of the default tier,
logs and denies port 8080 to every pod (the log checked by rule counters) and passes everything
else on; the default tier allows the frontend to nginx on 80 (the examples' own policy), 8080 and
9090, and ends there.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.dataplane.nstools import nsrun
from tests.felix import datasets
from tests.felix.controls import NETPROBE, assert_programmed, tcp_banner_ok
from tests.felix.lab import FelixLab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 180  # a loaded machine; the verdict flip itself is bounded at 10 s
NGINX_IP = "192.168.162.146"


def v3(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def security_guard(denied_port: int) -> dict[str, Any]:
    return v3(
        "GlobalNetworkPolicy",
        "security.guard",
        {
            "tier": "security",
            "order": 10,
            "selector": "all()",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Log", "protocol": "TCP", "destination": {"ports": [denied_port]}},
                {"action": "Deny", "protocol": "TCP", "destination": {"ports": [denied_port]}},
                {"action": "Pass"},
            ],
        },
    )


def log_packets(node: str) -> int:
    """Packets counted by Felix's LOG rules on the node (LOG reaches no log in a namespace here,
    so its rule counters are the evidence)."""
    total = 0
    for line in nsrun(node, "iptables-nft-save", "-c").stdout.splitlines():
        if " -j LOG " in line:
            total += int(line[1 : line.index(":")])
    return total


def tiered() -> list[dict[str, Any]]:
    more_ports = copy.deepcopy(datasets.NGINX_FROM_FRONTEND)
    more_ports["metadata"]["name"] = "nginx-more-ports"
    more_ports["spec"]["order"] = 200
    more_ports["spec"]["ingress"][0]["destination"]["ports"] = [8080, 9090]
    return [
        *datasets.examples(),
        v3("Tier", "security", {"order": 100}),
        security_guard(8080),
        more_ports,
    ]


@pytest.mark.parametrize("typha_kind", ["typha-py", "calico"])
def test_tier_pass_and_deny_through_felix(felix_lab: FelixLab, typha_kind: str) -> None:
    """The same verdicts whether Felix syncs from typha-py or from Calico Typha."""
    resources = tiered()
    pods = felix_lab.add_workload_namespaces(resources)
    nginx, frontend = pods["calia53571dc704"], pods["cali8b75868d7bb"]
    etcd = felix_lab.etcd()
    felix_lab.load(etcd, resources)
    typha = felix_lab.calico_typha(etcd) if typha_kind == "calico" else felix_lab.typha_py(etcd)
    felix = felix_lab.felix(etcd, typha)
    snap = felix_lab.snapshot()
    assert_programmed(felix, snap)
    # Felix programmed the security tier's policy (its inbound chain names the policy).
    assert any("security.guard" in rule for rules in snap.iptables["filter"].values()
               for rule in rules), "no rule mentions security.guard"  # fmt: skip
    server = subprocess.Popen(
        ["ip", "netns", "exec", nginx, sys.executable, str(NETPROBE), "server",
         "--tcp", "80,81,8080,9090"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        logged = log_packets(felix_lab.node)
        verdicts = {port: tcp_banner_ok(frontend, NGINX_IP, port) for port in (80, 81, 9090)}
        assert log_packets(felix_lab.node) == logged  # control: other ports are not logged
        verdicts[8080] = tcp_banner_ok(frontend, NGINX_IP, 8080)
        assert log_packets(felix_lab.node) > logged  # Log, then Deny: the dropped SYN counted
        assert verdicts == {
            80: True,  # security Pass -> default tier allow (the examples' policy)
            81: False,  # security Pass -> default tier ends: denied
            8080: False,  # security Deny, though the default tier would allow it
            9090: True,  # security Pass -> default tier allow (the second policy)
        }, verdicts
        # Control: the 8080 deny is the security tier's.  Move its Deny to another port, and
        # 8080 flips to the default tier's allow (polled up to 10 s).
        t0 = time.monotonic()
        felix_lab.load(etcd, [security_guard(7070)])
        while not tcp_banner_ok(frontend, NGINX_IP, 8080):
            assert time.monotonic() - t0 < 10, "8080 did not flip to allowed within 10 s"
            time.sleep(0.05)
        took = time.monotonic() - t0
        print(f"\nsecurity tier change -> allowed verdict via {typha_kind}: {took:.3f}s")
        assert not tcp_banner_ok(frontend, NGINX_IP, 81)  # the default tier still ends in deny
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
