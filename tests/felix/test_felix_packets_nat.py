"""Real packets through NAT outgoing, programmed by real Felix from typha-py (and from Calico
Typha, to the same verdicts): the natOutgoing case the felix_client packet suite runs, with the
same verdicts.

The frontend pod on node1 (192.168.162.147, in the examples' pool 192.168.0.0/16, natOutgoing)
connects to a server in the control namespace, which has no route back to the pool.  With NAT the
server sees the node's address and answers; with the pool's natOutgoing turned off the server sees
the pod's address and its answer has no way back.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.felix import datasets
from tests.felix.controls import NETPROBE, assert_programmed
from tests.felix.lab import CTL_IP, NODE_IP, FelixLab
from tests.felix.netns import entered

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 180  # a loaded machine; the verdict flip itself is bounded at 10 s
OUTSIDE_PORT = 15000


def banner(ns: str, host: str, port: int, timeout: float = 0.5) -> str | None:
    """From namespace `ns`, the address netprobe's TCP server saw us as (None: no answer)."""
    with entered(ns):
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                return conn.recv(64).decode(errors="replace").strip()
        except OSError:
            return None


def pool_with_nat(resources: list[dict[str, Any]], nat: bool) -> dict[str, Any]:
    pool = copy.deepcopy(next(r for r in resources if r["kind"] == "IPPool"))
    pool["spec"]["natOutgoing"] = nat
    return pool


@pytest.mark.parametrize("typha_kind", ["typha-py", "calico"])
def test_nat_outgoing_through_felix(felix_lab: FelixLab, typha_kind: str) -> None:
    """The same verdicts whether Felix syncs from typha-py or from Calico Typha."""
    resources = datasets.examples()
    assert pool_with_nat(resources, True) in resources  # the examples' pool does NAT outgoing
    pods = felix_lab.add_workload_namespaces(resources)
    frontend = pods["cali8b75868d7bb"]
    etcd = felix_lab.etcd()
    felix_lab.load(etcd, resources)
    typha = felix_lab.calico_typha(etcd) if typha_kind == "calico" else felix_lab.typha_py(etcd)
    felix = felix_lab.felix(etcd, typha)
    assert_programmed(felix, felix_lab.snapshot())
    server = subprocess.Popen(
        ["ip", "netns", "exec", felix_lab.ctl, sys.executable, str(NETPROBE), "server",
         "--tcp", str(OUTSIDE_PORT)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        # natOutgoing: the server sees the node's address, so its answer comes back.
        seen = banner(frontend, CTL_IP, OUTSIDE_PORT)
        assert seen is not None and seen.startswith(NODE_IP), seen
        t0 = time.monotonic()
        felix_lab.load(etcd, [pool_with_nat(resources, False)])
        while banner(frontend, CTL_IP, OUTSIDE_PORT) is not None:
            assert time.monotonic() - t0 < 10, "NAT was not withdrawn within 10 s"
            time.sleep(0.05)
        print(f"\nnatOutgoing off -> no way back via {typha_kind}: {time.monotonic() - t0:.3f}s")
        # Control: the same path works again once the pool NATs again.
        felix_lab.load(etcd, [pool_with_nat(resources, True)])
        deadline = time.monotonic() + 10
        while (seen := banner(frontend, CTL_IP, OUTSIDE_PORT)) is None:
            assert time.monotonic() < deadline, "NAT did not come back within 10 s"
            time.sleep(0.05)
        assert seen.startswith(NODE_IP), seen
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
