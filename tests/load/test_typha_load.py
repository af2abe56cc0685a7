"""``typha-load`` end to end: a real etcd, a real ``typha serve`` on it, churn, convergence.

Negative control for the convergence check: the same check against an expected state with a
key removed, one added and one changed must count exactly one lost, one ghost and one stale.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from load.lightclient import compare_states, pack_value, state_digest
from tests.peers.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


def test_compare_states_counts_each_kind_of_difference() -> None:
    state = {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}}
    expected = {k: pack_value(v) for k, v in state.items()}
    assert compare_states(state, expected) == {"lost": 0, "ghost": 0, "stale": 0}
    assert state_digest(state) == state_digest(expected, packed=True)
    wrong = dict(expected)
    del wrong["a"]  # the client has "a": a ghost
    wrong["d"] = pack_value({"v": 4})  # the client lacks "d": lost
    wrong["b"] = pack_value({"v": 20})  # different value: stale
    assert compare_states(state, wrong) == {"lost": 1, "ghost": 1, "stale": 1}
    assert state_digest(state) != state_digest(wrong, packed=True)


@pytest.fixture
def typha_on_etcd(etcd_server):  # type: ignore[no-untyped-def]
    port, health = free_ports(2)
    env = {
        **os.environ,
        "TYPHA_DATASTORETYPE": "etcdv3",
        "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHHOST": "127.0.0.1",
        "TYPHA_HEALTHPORT": str(health),
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = httpx.get(f"http://127.0.0.1:{health}/status", timeout=2).json()
                if status["views"]["felix"]["status"] == "in-sync":
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "typha did not get in sync"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{health}/status", status["pid"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_typha_load_churns_etcd_and_converges(etcd_server, typha_on_etcd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    addr, status_url, pid = typha_on_etcd
    out = tmp_path / "load.json"
    plot = tmp_path / "load.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "load.typha_load",
            "--typha",
            addr,
            "--etcd",
            etcd_server.client_url,
            "--clients",
            "12",
            "--full-clients",
            "3",
            "--processes",
            "2",
            "--pods",
            "60",
            "--rate",
            "40",
            "--duration",
            "4",
            "--sample",
            "1",
            "--typha-status",
            status_url,
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["clients"] == 12 and res["clients_in_sync"] == 12
    assert res["time_to_all_in_sync_s"] is not None
    assert res["typha_pids"] == [pid]
    assert res["typha_rss_bytes"] > 0 and res["typha_cpu_s"] > 0
    assert res["writes"]["create"] >= 60 and res["writes"]["relabel"] > 0
    assert res["etcd_errors"] == 0
    lat = res["update_latency_ms"]
    assert lat["samples"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    # The convergence check ran and found the full clients equal to etcd.
    assert res["convergence"] == "ok"
    assert res["full_clients_checked"] == 3 and res["full_clients_matching"] == 3
    assert res["lost_keys"] == 0 and res["ghost_keys"] == 0 and res["stale_keys"] == 0
    assert res["expected_keys"] > 0
    assert plot.stat().st_size > 0
