"""Faults with real Felix attached to typha-py: a SIGKILL followed by a warm restart from the
cache file, and an etcd compaction past the revision typha-py resumes from (after a restart, and
with Felix connected throughout), and churn while Felix itself is down.

After each, Felix (restarted if it exited, as calico-node would: with a lone Typha address its
syncclient gives up after a few tries) ends with the dataplane a fresh Felix programs from the same
data.  Each test also shows that its fault path ran: typha-py logged the warm start, and, for the
compaction, the refused resume and its relist.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.nstools import nsrun
from tests.felix import datasets, snapshot
from tests.felix.controls import FRONTEND_IP, assert_programmed, selector_members
from tests.felix.lab import FelixLab
from tests.felix.netns import entered
from tests.peers.felix import Felix, NsEtcd, NsTyphaPy

pytestmark = [pytest.mark.netns, pytest.mark.slow]

FELIX_TEST_SECONDS = 180  # two Felix starts, two typha-py starts, on a loaded machine

WARM_START_LINE = "warm restart: cache loaded"
COMPACTED_LINE = "etcd revision compacted; resyncing"


def frontend_with_app(resources: list[dict[str, Any]], app: str) -> dict[str, Any]:
    frontend = next(
        r
        for r in resources
        if r["kind"] == "WorkloadEndpoint" and "frontend" in r["metadata"]["name"]
    )
    changed = copy.deepcopy(frontend)
    changed["metadata"]["labels"]["app"] = app
    return changed


def warm_typha_py(lab: FelixLab, tmp_path: Path) -> tuple[Felix, NsEtcd, NsTyphaPy, Path]:
    """Felix programmed from a typha-py that saves its cache file every second; returns once a
    save newer than Felix's first update exists (so a SIGKILL leaves a usable file)."""
    resources = datasets.examples()
    lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    cache = tmp_path / "typha-cache"
    typha = lab.typha_py(
        etcd,
        extra_env={"TYPHA_CACHEFILEPATH": str(cache), "TYPHA_CACHESAVEINTERVALSECS": "1"},
    )
    felix = lab.felix(etcd, typha)
    assert_programmed(felix, lab.snapshot())
    synced = time.time()
    typha.wait_until(lambda: cache.exists() and cache.stat().st_mtime > synced, 15, "cache save")
    return felix, etcd, typha, cache


def follow_until(lab: FelixLab, felix: Felix, member_present: bool, seconds: float) -> int:
    """Wait until the frontend's presence in the selector ipset is `member_present`, restarting
    Felix whenever it exited; returns how many restarts that took."""
    restarts = 0
    deadline = time.monotonic() + seconds
    while (FRONTEND_IP in selector_members(lab.snapshot())) != member_present:
        assert time.monotonic() < deadline, felix.log_tail()
        if not felix.running:
            felix.start()
            restarts += 1
        time.sleep(0.1)
    return restarts


def assert_fresh_start_equal(
    lab: FelixLab, felix: Felix, etcd: NsEtcd, typha: NsTyphaPy, member_present: bool
) -> None:
    """The node's dataplane equals the one a new Felix on a blank node programs now."""
    felix.wait_until(lambda: felix.first_update_seconds() is not None, 10, "first-update line")
    time.sleep(1.0)  # let the last delta settle; a difference later would still show below
    after = lab.snapshot()
    lab.fresh_node(felix)
    lab.add_workload_interfaces(datasets.examples())
    fresh = lab.felix(etcd, typha)
    fresh.wait_until(lambda: fresh.first_update_seconds() is not None, 10, "first-update line")
    fresh_snap = lab.snapshot()
    # Positive controls: the fresh node is programmed, with the expected selector membership.
    assert {"cali-tw-calia53571dc704", "cali-fw-cali8b75868d7bb"} <= fresh_snap.chains()
    assert (FRONTEND_IP in selector_members(fresh_snap)) == member_present
    assert snapshot.diff(after, fresh_snap) == []


def test_felix_converges_after_typha_py_sigkill_and_warm_restart(
    felix_lab: FelixLab, tmp_path: Path
) -> None:
    """typha-py is SIGKILLed with a cache file on disk, a relabel lands while it is down, and it
    warm-starts from the file: the resumed watch brings the relabel to Felix."""
    resources = datasets.examples()
    felix, etcd, typha, _ = warm_typha_py(felix_lab, tmp_path)
    assert WARM_START_LINE not in typha.log_path.read_text()  # control: the first start was cold
    typha.kill()
    felix_lab.load(etcd, [frontend_with_app(resources, "not-frontend")])
    typha.start()
    assert WARM_START_LINE in typha.log_path.read_text(), typha.log_tail()
    restarts = follow_until(felix_lab, felix, False, 30)
    print(f"\nFelix restarts after the typha-py SIGKILL + warm restart: {restarts}")
    assert COMPACTED_LINE not in typha.log_path.read_text()  # nothing compacted here
    assert_fresh_start_equal(felix_lab, felix, etcd, typha, member_present=False)


def test_felix_converges_after_etcd_compaction_past_typha_py(
    felix_lab: FelixLab, tmp_path: Path
) -> None:
    """typha-py is SIGKILLed; while it is down a relabel lands and etcd compacts past the revision
    its cache file holds, so the warm-started watch is refused and typha-py relists; then churn
    reaches Felix through the relisted cache (the label goes back)."""
    resources = datasets.examples()
    felix, etcd, typha, _ = warm_typha_py(felix_lab, tmp_path)
    typha.kill()
    # Two writes, then compact at the second: the resume point (the first write's revision)
    # is then below the compaction; compacting at the first write would still allow it.
    felix_lab.load(etcd, [frontend_with_app(resources, "elsewhere")])
    felix_lab.load(etcd, [frontend_with_app(resources, "not-frontend")])
    with entered(felix_lab.ctl):  # etcd listens only inside the control namespace
        compacted_at = etcd.compact()
    typha.start()
    log = typha.log_path
    typha.wait_until(lambda: COMPACTED_LINE in log.read_text(), 20, "compaction resync")
    assert WARM_START_LINE in log.read_text()  # it did resume from the file, and was refused
    restarts = follow_until(felix_lab, felix, False, 30)
    # Churn after the relist: it must arrive as ordinary deltas over the new watch.
    felix_lab.load(etcd, [frontend_with_app(resources, "frontend")])
    restarts += follow_until(felix_lab, felix, True, 30)
    print(f"\ncompacted etcd at revision {compacted_at}; Felix restarts: {restarts}")
    assert_fresh_start_equal(felix_lab, felix, etcd, typha, member_present=True)


def test_felix_stays_connected_through_etcd_compaction_past_typha_py(
    felix_lab: FelixLab, tmp_path: Path
) -> None:
    """Felix stays connected to typha-py while typha-py's etcd watch falls behind a compaction:
    typha-py is paused (SIGSTOP) and its etcd connections are aborted (`ss -K`), two writes land
    and etcd compacts at the second, then typha-py resumes: its re-opened watch from the old
    revision is refused, it relists, and Felix, never restarted, follows and ends equal to a
    fresh start."""
    resources = datasets.examples()
    felix, etcd, typha, _ = warm_typha_py(felix_lab, tmp_path)  # its cache file plays no part
    felix_pid, log = felix.pid, typha.log_path
    assert typha.pid is not None and COMPACTED_LINE not in log.read_text()
    os.kill(typha.pid, signal.SIGSTOP)
    try:
        nsrun(felix_lab.ctl, "ss", "-K", "dst", etcd.host, "dport", "=", f":{etcd.client_port}")
        felix_lab.load(etcd, [frontend_with_app(resources, "elsewhere")])
        felix_lab.load(etcd, [frontend_with_app(resources, "not-frontend")])
        with entered(felix_lab.ctl):
            etcd.compact()
    finally:
        os.kill(typha.pid, signal.SIGCONT)
    typha.wait_until(lambda: COMPACTED_LINE in log.read_text(), 20, "compaction resync")
    assert follow_until(felix_lab, felix, False, 30) == 0
    felix_lab.load(etcd, [frontend_with_app(resources, "frontend")])
    assert follow_until(felix_lab, felix, True, 30) == 0
    assert felix.pid == felix_pid  # Felix stayed connected: same process, no restart
    assert_fresh_start_equal(felix_lab, felix, etcd, typha, member_present=True)


def test_felix_converges_after_churn_while_it_was_down(felix_lab: FelixLab) -> None:
    """Felix is SIGKILLed, leaving its dataplane behind; a relabel and a new policy land while it
    is down; Felix restarted on the same node (stale dataplane) ends equal to a fresh start."""
    resources = datasets.examples()
    felix_lab.add_workload_interfaces(resources)
    etcd = felix_lab.etcd()
    felix_lab.load(etcd, resources)
    typha = felix_lab.typha_py(etcd)
    felix = felix_lab.felix(etcd, typha)
    assert_programmed(felix, felix_lab.snapshot())
    felix.kill()
    extra = copy.deepcopy(datasets.NGINX_FROM_FRONTEND)
    extra["metadata"]["name"] = "nginx-from-not-frontend"
    extra["spec"]["ingress"][0]["source"]["selector"] = "app == 'not-frontend'"
    felix_lab.load(etcd, [frontend_with_app(resources, "not-frontend"), extra])
    stale = felix_lab.snapshot()
    assert FRONTEND_IP in selector_members(
        stale
    )  # control: nothing changed it while Felix was down
    felix.start()
    # The frontend leaves the first selector's set and joins the new policy's.
    deadline = time.monotonic() + 30
    while True:
        sets = {
            n: m for n, (_, m) in felix_lab.snapshot().ipsets.items() if n.startswith("cali40s:")
        }
        holding = [n for n, m in sets.items() if FRONTEND_IP in m]
        if len(sets) == 2 and len(holding) == 1 and holding[0] not in stale.ipsets:
            break
        assert time.monotonic() < deadline, (sets, felix.log_tail())
        time.sleep(0.1)
    assert_fresh_start_equal(felix_lab, felix, etcd, typha, member_present=True)
