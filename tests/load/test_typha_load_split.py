"""``typha-load``'s latency split: etcd commit from its own writer, the coalescing window and
the fan-out run from Typha's /metrics, the rest by difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from load.typha_load import latency_split
from tests.peers.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


def test_the_split_is_the_metric_deltas_and_the_rest_is_the_difference() -> None:
    before = {
        "typha_datastore_convert_secs": (0.0, 0.0),
        "typha_fanout_wait_secs": (1.0, 100.0),
        "typha_fanout_run_secs": (0.5, 10.0),
        "typha_ping_latency": (0.0, 0.0),
    }
    # Over the churn: 300 updates waited 0.6 s in all for their conversion (2 ms each) and
    # 3 s for the window (10 ms each); 20 runs took 0.4 s (20 ms each).
    after = {
        "typha_datastore_convert_secs": (0.6, 300.0),
        "typha_fanout_wait_secs": (4.0, 400.0),
        "typha_fanout_run_secs": (0.9, 30.0),
        "typha_ping_latency": (0.2, 50.0),  # 4 ms each: reported, not subtracted
    }
    split = latency_split([30.0, 50.0], [4.0, 6.0], before, after)
    assert split["mean_ms"] == {
        "end_to_end": 40.0,
        "etcd_commit": 5.0,
        "conversion": 2.0,
        "batching_window": 10.0,
        "fanout_half_run": 10.0,
        "fanout_run": 20.0,
        "watch_delivery_client_rest": 13.0,
        "ping_rtt": 4.0,
    }
    assert split["etcd_commit_ms"]["samples"] == 2
    # Without Typha's metrics the parts it measures are unknown, and so is the rest.
    unknown = latency_split([30.0, 50.0], [4.0, 6.0], {}, {})["mean_ms"]
    assert unknown["batching_window"] is None and unknown["watch_delivery_client_rest"] is None
    assert unknown["etcd_commit"] == 5.0 and unknown["end_to_end"] == 40.0


def test_typha_load_reports_the_split_from_a_real_typha(etcd_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, health, metrics_port = free_ports(3)
    env = {
        **os.environ,
        "TYPHA_DATASTORETYPE": "etcdv3",
        "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHHOST": "127.0.0.1",
        "TYPHA_HEALTHPORT": str(health),
        "TYPHA_PROMETHEUSMETRICSENABLED": "true",
        "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
        "TYPHA_PROMETHEUSMETRICSPORT": str(metrics_port),
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": "WARNING",
    }
    typha = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
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
            assert typha.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        out = tmp_path / "load.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "load.typha_load",
                "--typha",
                f"127.0.0.1:{port}",
                "--etcd",
                etcd_server.client_url,
                "--clients",
                "4",
                "--pods",
                "40",
                "--rate",
                "40",
                "--duration",
                "3",
                "--sample",
                "1",
                "--typha-pid",
                str(typha.pid),
                "--typha-metrics",
                f"http://127.0.0.1:{metrics_port}/metrics",
                "--json",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        split = json.loads(out.read_text())["latency_split"]
        mean = split["mean_ms"]
        assert split["etcd_commit_ms"]["samples"] > 0
        assert 0 < mean["etcd_commit"] < mean["end_to_end"]
        # Typha's own parts came from its /metrics: a window was waited, runs took time.
        assert mean["conversion"] > 0
        assert mean["batching_window"] > 0 and mean["fanout_run"] > 0
        assert mean["watch_delivery_client_rest"] is not None
    finally:
        typha.terminate()
        try:
            typha.wait(timeout=20)
        except subprocess.TimeoutExpired:
            typha.kill()
            typha.wait()
