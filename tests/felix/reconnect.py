"""Felix's reconnect after a SIGKILL of the Typha replica it is connected to, the same way for
typha-py and Calico Typha (used by tests/felix/test_felix_sigkill_replica.py, which asserts
convergence, and by `python -m load.felix_reconnect`, which records the times).

Set-up, as for the drain: two replicas on one etcd, listed by an EndpointSlice of Service
calico-system/calico-typha on a kube-apiserver, Felix finding them as calico-node does.  One
round:

1. the replica Felix is connected to is paused (SIGSTOP), and the frontend Pod's label is flipped
   in etcd (`frontend` <-> `not-frontend`); after a second the other replica holds the change and
   Felix, whose replica is paused, has not seen it;
2. the paused replica is SIGKILLed (t0: the kernel closes its sockets, Felix's connection ends).
   Its EndpointSlice is left as it was (ready): a killed pod stays listed until Kubernetes
   notices, so Felix may try the dead address first, as it would in a cluster;
3. Felix reconnects to the other replica, resyncs, and programs the change.

Times, all from t0 (the wall clock right after the SIGKILL returned, against Felix's own log
timestamps for the first two):
- `detect_s`: Felix's "Typha connection restarted" (it noticed and started a new connection);
- `resync_s`: Felix's "Resync with Typha complete" (it holds the full data of the other
  replica again and has synthesised deletions);
- `programmed_s`: the first poll of the node's `ipset save` that shows the flipped membership
  of the policy's selector set (the dataplane programmed; polled every ~15 ms).

"No wrong dataplane" is checked by a sampler of the whole dataplane (>= 5 Hz) from before the
pause until after the change is programmed: no fact of the dataplane before the round is ever
missing except the one the change removes, and the end state differs from the start by exactly
the selector set's frontend member.  The killed replica is restarted (same port) at the end of
the round, so rounds can repeat on one set-up.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from tests.felix import datasets, snapshot
from tests.felix.controls import FRONTEND_IP, assert_programmed
from tests.felix.lab import FelixLab
from tests.felix.netns import entered
from tests.felix.test_felix_drain import (
    RESTARTED,
    RESYNCED,
    SERVICE,
    Sampler,
    connected_addresses,
    log_events,
    put_slice,
    running,
)
from tests.peers.felix import Felix

FAILED_CONNECT = "Failed to connect to typha endpoint"
# The replica paused while the change lands: long enough for the other replica's watch to
# deliver it (milliseconds) on a loaded machine, short of Felix's 30 s read timeout.
PAUSE_S = 1.0
PROGRAMMED_TIMEOUT_S = 30.0
# Between two `ipset save` polls: a back-to-back loop of execs would take a core from Felix, the
# Typhas and the sampler on this 2-core machine (and skew what it measures).
POLL_GAP_S = 0.01


@dataclass
class Setup:
    lab: FelixLab
    kind: str
    etcd: Any
    replicas: list[Any]
    felix: Felix
    frontend: dict[str, Any]


@dataclass
class Round:
    kind: str
    killed: str
    moved_to: str
    detect_s: float
    resync_s: float
    programmed_s: float
    failed_attempts: int
    felix_pid_kept: bool
    samples: int
    sample_rate_hz: float
    lost: list[tuple[float, list[str]]] = field(default_factory=list)
    allowed_loss: list[str] = field(default_factory=list)
    end_change: list[str] = field(default_factory=list)


def set_up(lab: FelixLab, kind: str) -> Setup:
    resources = datasets.examples()
    lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    if kind == "calico":
        replicas = [lab.calico_typha(etcd), lab.calico_typha(etcd)]
    else:
        replicas = [lab.typha_py(etcd), lab.typha_py(etcd)]
    kube = lab.kube(crds=False)
    with entered(lab.ctl):
        kube.create_namespace(SERVICE[0])
    for i, r in enumerate(replicas):
        put_slice(kube, lab.ctl, f"typha-{i}", r.port, ready=True)
    felix = lab.felix(etcd, None, kubeconfig=kube.kubeconfig_path, typha_service=SERVICE)
    assert_programmed(felix, lab.snapshot())
    frontend = next(
        r
        for r in resources
        if r["kind"] == "WorkloadEndpoint" and "frontend" in r["metadata"]["name"]
    )
    return Setup(lab, kind, etcd, replicas, felix, frontend)


def frontend_members(ns: str) -> bool:
    """Is the frontend's address in a selector set of the node (one `ipset save`)?"""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ipset", "save"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return any(
        line.startswith("add cali40s:") and line.split()[2] == FRONTEND_IP
        for line in out.splitlines()
    )


def _relabelled(frontend: dict[str, Any], app: str) -> dict[str, Any]:
    changed = copy.deepcopy(frontend)
    changed["metadata"]["labels"]["app"] = app
    return changed


def one_round(s: Setup) -> Round:
    lab, felix = s.lab, s.felix
    by_address = {r.address: r for r in s.replicas}
    current = connected_addresses(felix)[-1]
    victim = by_address[current]
    was_member = frontend_members(lab.node)
    before = lab.snapshot()
    member_fact = next(
        f for f in before.flat() if f.startswith("ipset cali40s:") and f.endswith(FRONTEND_IP)
    ) if was_member else None  # fmt: skip
    allowed_loss = {member_fact} if member_fact else set()
    sampler = Sampler(lab.node, before.flat() - allowed_loss)
    pid = felix.pid
    log_lines_before = len(log_events(felix))
    with running(sampler):
        time.sleep(0.3)
        assert victim.pid is not None
        # The whole process group (the peer runs in its own session), helpers included.
        os.killpg(victim.pid, signal.SIGSTOP)
        try:
            app = "not-frontend" if was_member else "frontend"
            lab.load(s.etcd, [_relabelled(s.frontend, app)])
            time.sleep(PAUSE_S)
            # Control: Felix has not seen the change through its paused replica.
            assert frontend_members(lab.node) == was_member
        finally:
            t0, wall0 = time.monotonic(), dt.datetime.now()
            os.killpg(victim.pid, signal.SIGKILL)
        while frontend_members(lab.node) == was_member:
            assert time.monotonic() - t0 < PROGRAMMED_TIMEOUT_S, felix.log_tail()
            time.sleep(POLL_GAP_S)
        programmed = time.monotonic() - t0
        victim.kill()  # reap it (already dead) and close its log
        time.sleep(0.5)  # keep sampling a little past the change
    after = lab.snapshot()
    new_events = log_events(felix)[log_lines_before:]
    since = wall0.replace(microsecond=wall0.microsecond // 1000 * 1000)  # Felix logs ms
    detect = next(t for t, line in new_events if RESTARTED in line and t >= since)
    resync = next(t for t, line in new_events if RESYNCED in line and t >= detect)
    failed = sum(1 for t, line in new_events if FAILED_CONNECT in line and t >= since)
    moved_to = connected_addresses(felix)[-1]
    end_change = snapshot.diff(before, after)
    victim.start()  # the killed replica comes back on its port for the next round
    return Round(
        kind=s.kind,
        killed=current,
        moved_to=moved_to,
        detect_s=round((detect - wall0).total_seconds(), 3),
        resync_s=round((resync - wall0).total_seconds(), 3),
        programmed_s=round(programmed, 3),
        failed_attempts=failed,
        felix_pid_kept=felix.running and felix.pid == pid,
        samples=sampler.samples,
        sample_rate_hz=round(sampler.rate, 1),
        lost=sampler.missing,
        allowed_loss=sorted(allowed_loss),
        end_change=end_change,
    )


def expected_change(r: Round) -> list[str]:
    """The one difference the round's label flip makes: the frontend's selector set member."""
    return [c for c in r.end_change if c[2:].startswith("ipset cali40s:")]


# The drain's no-flap check samples at >= 10 Hz; after a SIGKILL the check is convergence with no
# fact lost on the way, and at a load average above ~10 the sampler (a full `iptables-nft-save`,
# `ipset save` and `ip route` per sample) fell to 6-9 Hz in a quarter of the rounds. 5 Hz still
# puts several samples inside every reconnect measured (48-618 ms).
MIN_SAMPLE_HZ = 5


def check(r: Round) -> None:
    """Convergence and no wrong dataplane (no timing: figures belong to the benchmark)."""
    assert r.felix_pid_kept, "Felix restarted instead of reconnecting"
    assert r.moved_to != r.killed, (r.killed, r.moved_to)
    assert r.sample_rate_hz >= MIN_SAMPLE_HZ, f"sampled at {r.sample_rate_hz} Hz only"
    assert not r.lost, r.lost[:3]
    assert len(r.end_change) == 1 and r.end_change == expected_change(r), r.end_change
    assert r.end_change[0].endswith(f"member {FRONTEND_IP}"), r.end_change
