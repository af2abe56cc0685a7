"""A hung etcd (SIGSTOP: the connection stays open, nothing answers) is noticed by a bounded
probe within ``EtcdHangDetectionSecs``, reported on /readiness (not /liveness), in the metrics and
the log; after SIGCONT Typha resumes its watch and every client converges without loss.

Before the probe, Typha stayed "connected" and ready for as long as the watch idle timeout
(660 s by default): etcd's progress notifications are a server flag Typha cannot change.

The test here pins the JSON gateway (``EtcdAPI=gateway``); test_etcd_hang_grpc.py runs it with
gRPC, the default.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import REGISTRY

from typha.sync.etcd import EtcdDatastore

from . import harness
from .harness import etcd_scenario, figure, ms, wait_until
from .test_etcd_leg import saw_wait_for_datastore, wait_until_async

DETECT_SECS = 2.0

_made: list[EtcdDatastore] = []


class _GatewayDatastore(EtcdDatastore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("api", "gateway")
        super().__init__(*args, **kwargs)
        _made.append(self)


@pytest.fixture(autouse=True)
def gateway_datastores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For the tests collected here only (test_etcd_hang_grpc.py patches its own way)."""
    _made.clear()
    monkeypatch.setattr(harness, "EtcdDatastore", _GatewayDatastore)
    yield
    assert all(ds.api == "gateway" for ds in _made)


def probe_failures() -> float:
    return REGISTRY.get_sample_value("typha_datastore_probe_failures_total") or 0.0


async def test_hung_etcd_is_detected_reported_and_recovered(etcd_server) -> None:  # type: ignore[no-untyped-def]
    async with etcd_scenario(
        etcd_server, app=True, ds_kwargs={"hang_detection_secs": DETECT_SECS}
    ) as sc:
        assert sc.app is not None

        async def liveness() -> int:
            async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
                r = await http.get(f"http://127.0.0.1:{sc.app.health_port}/liveness")
            return r.status_code

        await sc.baseline(1.0)
        # Positive control: a healthy etcd under churn passes several probe periods.
        await trio.sleep(2 * DETECT_SECS)
        assert sc.datastore.probe_failures == 0 and sc.feed.connected
        assert await sc.readiness() == 200
        failures_before, watches = probe_failures(), sc.datastore.watches_started
        pid = etcd_server.pid
        assert pid is not None
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            detected = await wait_until(lambda: not sc.feed.connected, 10, "hang detected")
            not_ready = await wait_until_async(sc.readiness, 503, 10)
            assert await liveness() == 200  # not liveness: replicas must not all restart
            assert probe_failures() > failures_before
            await trio.sleep(1.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        stopped_for = time.monotonic() - t_stop
        t_cont = time.monotonic()
        await wait_until(lambda: sc.feed.connected and sc.feed.in_sync, 30, "Typha back in sync")
        await wait_until_async(sc.readiness, 200, 30)
        ready_after = time.monotonic() - t_cont
        await sc.window(1.0)
        conv = await sc.finish()
        figure(
            "etcd SIGSTOP (hung) then SIGCONT",
            stopped_for=ms(stopped_for),
            detected_after=ms(detected),
            readiness_503_after=ms(detected + not_ready),
            ready_after_sigcont=ms(ready_after),
            probe_failures=probe_failures() - failures_before,
            watches_restarted=sc.datastore.watches_started - watches,
            resyncs=sc.datastore.resyncs,
            converge=conv,
        )
        # Detected within the setting (plus scheduling slack on a busy machine).
        assert detected <= DETECT_SECS + 1.5, detected
        assert sc.datastore.resyncs == 1  # resumed by revision: no relist
        assert sc.datastore.watches_started > watches
        assert saw_wait_for_datastore(sc) == len(sc.clients)
        assert all(c.stats.disconnects == 0 for c in sc.clients)


def test_the_setting_reaches_the_datastore() -> None:
    from typha.app import build_datastore, datastore_settings
    from typha.config import load_config

    assert build_datastore(datastore_settings(load_config(environ={}))).hang_detection_secs == 30
    cfg = load_config(environ={"TYPHA_ETCDHANGDETECTIONSECS": "5"})
    assert build_datastore(datastore_settings(cfg)).hang_detection_secs == 5.0
