"""A real Prometheus scrapes a running Typha; the values come back through its query API."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import trio

from felix_client.sync_client import SyncClient

from .peers.ports import free_ports


async def test_prometheus_scrapes_typha_metrics(prometheus_factory) -> None:  # type: ignore[no-untyped-def]
    port, metrics_port, health_port = free_ports(3)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "true",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_PROMETHEUSMETRICSENABLED": "true",
        "TYPHA_PROMETHEUSMETRICSPORT": str(metrics_port),
        "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHPORT": str(health_port),
        "TYPHA_HEALTHHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_SHUTDOWNTIMEOUTSECS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            with trio.fail_after(20):
                while True:
                    try:
                        r = await http.get(f"http://127.0.0.1:{health_port}/readiness")
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
            live = await http.get(f"http://127.0.0.1:{health_port}/liveness")
            assert live.status_code == 200 and "felix-cache" in live.text
        clients = [SyncClient([f"127.0.0.1:{port}"], f"n{i}") for i in range(3)]
        prom = await trio.to_thread.run_sync(
            lambda: prometheus_factory([f"127.0.0.1:{metrics_port}"])
        )
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run)
            with trio.fail_after(10):
                for c in clients:
                    await c.in_sync.wait()
            value = await trio.to_thread.run_sync(
                lambda: prom.wait_for_value(
                    'typha_connections_streaming{syncer="felix"} == 3', timeout=30
                )
            )
            assert value == 3
            accepted = await trio.to_thread.run_sync(
                prom.query_value, "typha_connections_accepted_total"
            )
            assert accepted is not None and accepted >= 3
            # Calico Typha's bare counter name works too (dashboards written for Typha).
            bare = await trio.to_thread.run_sync(prom.query_value, "typha_connections_accepted")
            assert bare == accepted
            # Pre-created vectors: the bgp syncer exists at 0 from the start.
            bgp = await trio.to_thread.run_sync(
                prom.query_value, 'typha_connections_streaming{syncer="bgp"}'
            )
            assert bgp == 0
            snaps = await trio.to_thread.run_sync(
                prom.query_value, 'typha_snapshots_generated_total{syncer="felix"}'
            )
            assert snaps is not None and snaps >= 1
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
