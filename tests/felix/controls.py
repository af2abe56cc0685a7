"""Positive controls shared by the Felix tests: what the examples must make Felix program on
node1, whichever Typha and datastore it synced from."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.felix import datasets, snapshot
from tests.felix.netns import entered
from tests.peers.felix import Felix

NETPROBE = Path(__file__).parent.parent / "dataplane" / "netprobe.py"
FRONTEND_IP = "192.168.162.147"


def assert_programmed(felix: Felix, snap: snapshot.Snapshot) -> None:
    """Felix logged its first completed dataplane update, and node1's per-endpoint chains,
    workload routes, the policy's selector ipset (with the frontend's address) and the policy
    chain reached from nginx's to-workload chain are all there."""
    # Felix logs through a queue written out by another goroutine (dropping lines when it is
    # full), so the line can trail the readiness it comes with.
    felix.wait_until(lambda: felix.first_update_seconds() is not None, 10, "first-update line")
    chains = snap.chains()
    for iface, ip in datasets.NODE1_ENDPOINTS.items():
        assert {f"cali-tw-{iface}", f"cali-fw-{iface}"} <= chains, sorted(chains)
        assert any(r.startswith(f"{ip} dev {iface} ") for r in snap.routes), sorted(snap.routes)
    selector_sets = {n: m for n, (_, m) in snap.ipsets.items() if n.startswith("cali40s:")}
    assert frozenset({"192.168.162.147"}) in selector_sets.values(), snap.ipsets
    # The policy's inbound chain, reached from nginx's to-workload chain.
    policy_chains = {c for c in chains if c.startswith("cali-pi-")}
    assert policy_chains, sorted(chains)
    tw = snap.iptables["filter"]["cali-tw-calia53571dc704"]
    assert any(c in rule for c in policy_chains for rule in tw), tw


def selector_members(snap: snapshot.Snapshot) -> set[str]:
    return {m for n, (_, ms) in snap.ipsets.items() if n.startswith("cali40s:") for m in ms}


def tcp_banner_ok(ns: str, host: str, port: int, timeout: float = 0.5) -> bool:
    """From namespace `ns`, connect to netprobe's TCP server and read its banner (the peer's
    address as the server saw it: the frontend pod's)."""
    with entered(ns):
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                return conn.recv(64).startswith(FRONTEND_IP.encode())
        except OSError:
            return False
