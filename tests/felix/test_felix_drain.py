"""A Typha replica drained under a running Felix: Felix moves to the other replica without a flap.

Two replicas (typha-py or Calico Typha) serve one etcd; a kube-apiserver in the control namespace
holds an EndpointSlice of Service calico-system/calico-typha listing both, and Felix finds them
the way calico-node does (`FELIX_TYPHAK8SSERVICENAME` + a kubeconfig; the datastore stays etcd).
The replica Felix is connected to is marked not ready in its slice and sent SIGTERM (what
Kubernetes does to a terminating pod). "No flap" is checked three ways while that happens:

- Felix's pid is unchanged and it is still running (it reconnected, not restarted);
- the node's dataplane, sampled at >= 10 Hz from before the SIGTERM until after Felix's resync,
  never lacks a fact (rule, ipset member, route) the dataplane had before;
- a packet probe between the two pods, running throughout, never gets a wrong verdict (port 80
  allowed by policy, port 81 denied).

Positive controls: Felix really moved (its log names the other replica after the drain, and the
drained one exited); the sampler sees a fact removed behind Felix's back; both probe verdicts are
seen before the drain.  Reconnect time is read from Felix's own log: the old connection's end
("Typha connection restarted") to "Resync with Typha complete" (Felix holds the full data again
and has synthesised deletions; with unchanged data the dataplane needs no write after that).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dataplane.nstools import nsrun
from tests.felix import datasets, snapshot
from tests.felix.controls import NETPROBE, assert_programmed, tcp_banner_ok
from tests.felix.lab import FelixLab
from tests.felix.netns import entered
from tests.peers.felix import Felix, NsKubeApiServer

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.k8s]

FELIX_TEST_SECONDS = 300
SERVICE = ("calico-system", "calico-typha")
NGINX_IP = "192.168.162.146"
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")
CONNECTED = re.compile(r"Successfully connected to Typha at (\S+) after")
RESTARTED = "Typha connection restarted"
RESYNCED = "Resync with Typha complete"


def endpoint_slice(name: str, port: int, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": SERVICE[1]}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}],
        "ports": [{"name": "calico-typha", "port": port, "protocol": "TCP"}],
    }


def put_slice(kube: NsKubeApiServer, ctl: str, name: str, port: int, ready: bool) -> None:
    base = f"/apis/discovery.k8s.io/v1/namespaces/{SERVICE[0]}/endpointslices"
    body = endpoint_slice(name, port, ready)
    with entered(ctl):
        r = kube.request("POST", base, json=body)
        if r.status_code == 409:
            current = kube.request("GET", f"{base}/{name}").json()
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            r = kube.request("PUT", f"{base}/{name}", json=body)
    assert r.status_code in (200, 201), r.text


def log_events(felix: Felix) -> list[tuple[dt.datetime, str]]:
    out = []
    for line in felix.log_path.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m:
            out.append((dt.datetime.fromisoformat(m.group(1)), line))
    return out


def connected_addresses(felix: Felix) -> list[str]:
    return [m.group(1) for _, line in log_events(felix) if (m := CONNECTED.search(line))]


class Sampler(threading.Thread):
    """Samples the node's dataplane (iptables, ipsets, routes: three commands run at once in the
    namespace) as fast as it can, recording for each sample the baseline facts it lacks."""

    def __init__(self, ns: str, baseline: set[str]):
        super().__init__(daemon=True)
        self.ns, self.baseline = ns, baseline
        self.stop_event = threading.Event()
        self.samples = 0
        self.missing: list[tuple[float, list[str]]] = []
        self.started_at = self.stopped_at = 0.0

    def sample(self) -> snapshot.Snapshot:
        cmds = [
            ["iptables-nft-save"],
            ["ipset", "save"],
            ["ip", "-4", "route", "show", "table", "all"],
        ]
        exec_in = ["ip", "netns", "exec", self.ns]
        procs = [
            subprocess.Popen(
                [*exec_in, *c], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            for c in cmds
        ]
        outs = [p.communicate(timeout=10)[0] for p in procs]
        return snapshot.parse(*outs)

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self.stop_event.is_set():
            lost = sorted(self.baseline - self.sample().flat())
            self.samples += 1
            if lost:
                self.missing.append((time.monotonic(), lost))
        self.stopped_at = time.monotonic()

    @property
    def rate(self) -> float:
        return self.samples / max(self.stopped_at - self.started_at, 1e-9)


class Prober(threading.Thread):
    """frontend -> nginx on `port` over and over; `allowed` is the verdict policy gives."""

    def __init__(self, frontend_ns: str, port: int, allowed: bool):
        super().__init__(daemon=True)
        self.ns, self.port, self.allowed = frontend_ns, port, allowed
        self.stop_event = threading.Event()
        self.verdicts = [0, 0]  # [connected, refused/dropped]
        self.wrong: list[float] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            timeout = 2.0 if self.allowed else 0.2  # a dropped SYN shows as the timeout
            ok = tcp_banner_ok(self.ns, NGINX_IP, self.port, timeout=timeout)
            self.verdicts[0 if ok else 1] += 1
            if ok != self.allowed:
                self.wrong.append(time.monotonic())
            if ok:
                time.sleep(0.02)


@contextlib.contextmanager
def running(*threads: Sampler | Prober) -> Iterator[None]:
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for t in threads:
            t.stop_event.set()
        for t in threads:
            t.join(timeout=30)


def start_replicas(lab: FelixLab, kind: str, etcd: Any) -> list[Any]:
    if kind == "calico":
        return [lab.calico_typha(etcd), lab.calico_typha(etcd)]
    return [lab.typha_py(etcd), lab.typha_py(etcd)]


@pytest.mark.parametrize("typha_kind", ["typha-py", "calico"])
def test_drain_with_a_second_replica_does_not_flap(felix_lab: FelixLab, typha_kind: str) -> None:
    lab = felix_lab
    resources = datasets.examples()
    pods = lab.add_workload_namespaces(resources)
    nginx, frontend = pods["calia53571dc704"], pods["cali8b75868d7bb"]
    etcd = lab.etcd()
    lab.load(etcd, resources)
    replicas = start_replicas(lab, typha_kind, etcd)
    kube = lab.kube(crds=False)
    with entered(lab.ctl):
        kube.create_namespace(SERVICE[0])
    for i, r in enumerate(replicas):
        put_slice(kube, lab.ctl, f"typha-{i}", r.port, ready=True)
    felix = lab.felix(etcd, None, kubeconfig=kube.kubeconfig_path, typha_service=SERVICE)
    baseline_snap = lab.snapshot()
    assert_programmed(felix, baseline_snap)
    by_address = {r.address: (i, r) for i, r in enumerate(replicas)}
    first = connected_addresses(felix)
    assert len(first) == 1 and first[0] in by_address, first
    index, drained = by_address[first[0]]
    other = replicas[1 - index]
    felix_pid = felix.pid

    server = subprocess.Popen(
        ["ip", "netns", "exec", nginx, sys.executable, str(NETPROBE), "server", "--tcp", "80,81"],
        stdout=subprocess.PIPE,
    )
    sampler = Sampler(lab.node, baseline_snap.flat())
    allowed, denied = Prober(frontend, 80, True), Prober(frontend, 81, False)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        with running(sampler, allowed, denied):
            time.sleep(1.0)
            put_slice(kube, lab.ctl, f"typha-{index}", drained.port, ready=False)
            t_term, wall_term = time.monotonic(), dt.datetime.now()
            drained.stop(timeout=60)  # SIGTERM, then wait for the drain to finish
            t_drained = time.monotonic()
            deadline = t_term + 60
            while RESYNCED not in felix.log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline, felix.log_tail()
                assert felix.running, felix.log_tail()
                time.sleep(0.05)
            t_resynced = time.monotonic()
            time.sleep(2.0)  # keep sampling and probing after the resync
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()

    # Felix moved to the other replica, without restarting.
    assert felix.running and felix.pid == felix_pid
    assert connected_addresses(felix) == [drained.address, other.address]
    assert not drained.running
    # Felix's own reconnect timeline.
    events = log_events(felix)
    restarted = next(t for t, line in events if RESTARTED in line)
    resynced = next(t for t, line in events if RESYNCED in line)
    reconnect_s = (resynced - restarted).total_seconds()
    print(
        f"\n{typha_kind} drain: SIGTERM->replica exited {t_drained - t_term:.3f}s, "
        f"SIGTERM->Felix's old connection ended {(restarted - wall_term).total_seconds():.3f}s, "
        f"->resync complete {(resynced - wall_term).total_seconds():.3f}s "
        f"(seen {t_resynced - t_term:.3f}s); "
        f"connection restarted->resync complete {reconnect_s:.3f}s; "
        f"sampler {sampler.samples} samples at {sampler.rate:.1f} Hz; "
        f"probes [ok, not ok]: 80 {allowed.verdicts}, 81 {denied.verdicts}"
    )
    # No flap: the dataplane never lost a fact and no packet got a wrong verdict.
    assert sampler.rate >= 10, f"sampled at {sampler.rate:.1f} Hz only"
    assert not sampler.missing, sampler.missing[:3]
    assert not allowed.wrong and not denied.wrong, (allowed.wrong[:5], denied.wrong[:5])
    assert allowed.verdicts[0] > 0 and denied.verdicts[1] > 0  # both verdicts seen
    # Positive control for the sampler: a fact removed behind Felix's back is seen.
    lab.stop(felix)
    nsrun(lab.node, "ip", "route", "del", NGINX_IP, "dev", "calia53571dc704")
    lost = sampler.baseline - sampler.sample().flat()
    assert any(f.startswith(f"route {NGINX_IP} dev") for f in lost), lost
