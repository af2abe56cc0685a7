"""Faults on the etcd leg: Typha (in-process) → toxiproxy → etcd (real), clients direct.

Toxics (latency with jitter, bandwidth, slicer, reset_peer, a black-holing timeout, limit_data),
then etcd itself SIGKILLed and restarted, and compaction while churn runs. Every test ends with
exact convergence of ≥ 24 clients against a range read of etcd, and shows that the fault bit.
"""

from __future__ import annotations

import time

import pytest
import trio

from tests.peers.etcd import _binary_info, find_etcd
from typha.protocol import SyncStatus
from typha.sync.etcd_common import EtcdAccess

from .harness import (
    blocking,
    delta,
    etcd_scenario,
    figure,
    ms,
    status_log,
    wait_until,
)


def saw_wait_for_datastore(sc) -> int:
    """How many clients were told WAIT_FOR_DATASTORE."""
    return sum(1 for c in sc.clients if SyncStatus.WAIT_FOR_DATASTORE in status_log(c))


@pytest.mark.toxiproxy
async def test_latency_with_jitter(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, etcd_leg=True) as sc:
        base = await sc.baseline(2.0)
        toxic = await sc.add_toxic(sc.etcd_proxy, "latency", latency=300, jitter=100)
        bad = await sc.window(3.0)
        await sc.remove_toxic(sc.etcd_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure("etcd-leg latency 300±100ms", without=without, with_toxic=with_, converge=conv)
        assert with_.p50 is not None and without.p50 is not None
        assert with_.p50 > without.p50 + 0.15, (without, with_)
        assert sc.datastore.resyncs == 1
        assert all(c.stats.snapshots == 1 for c in sc.clients)


@pytest.mark.toxiproxy
async def test_bandwidth_limit(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, etcd_leg=True) as sc:
        base = await sc.baseline(2.0)
        toxic = await sc.add_toxic(sc.etcd_proxy, "bandwidth", rate=8)  # KB/s
        bad = await sc.window(3.0)
        await sc.remove_toxic(sc.etcd_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure("etcd-leg bandwidth 8KB/s", without=without, with_toxic=with_, converge=conv)
        assert with_.p50 is not None and without.p50 is not None
        assert with_.p50 > without.p50 + 0.3, (without, with_)
        assert sc.datastore.resyncs == 1
        assert all(c.stats.snapshots == 1 for c in sc.clients)


# The slicer's positive control: how much it must add to the p50 of write -> client. It cuts
# every byte etcd sends into ~48-byte pieces 1.5 ms apart, so what it adds grows with the size of
# a watch message: the gateway's NDJSON line (JSON, base64 values) added well over 0.1 s; gRPC's
# binary protobuf message for the same events is smaller and added ~28 ms when measured, so its
# threshold is 10 ms (several slices' delay).
SLICER_MIN_ADDED_P50 = {"gateway": 0.1, "grpc": 0.01}


@pytest.mark.toxiproxy
@pytest.mark.parametrize("api", ["grpc", "gateway"])
async def test_slicer(etcd_server, toxiproxy_server, api: str) -> None:
    """The watch's stream (the gateway's NDJSON lines, or gRPC's HTTP/2 frames) cut into
    ~48-byte pieces 1.5 ms apart: every message (and every value) is split many times, and
    nothing is lost or misparsed."""
    async with etcd_scenario(
        etcd_server, toxiproxy_server, etcd_leg=True, ds_kwargs={"api": api}
    ) as sc:
        assert sc.datastore.api == api
        base = await sc.baseline(2.0)
        watches = sc.datastore.watches_started
        toxic = await sc.add_toxic(
            sc.etcd_proxy, "slicer", average_size=48, size_variation=32, delay=1500
        )
        bad = await sc.window(3.0)
        await sc.remove_toxic(sc.etcd_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure(
            f"etcd-leg slicer 48±32B/1.5ms ({api})",
            without=without,
            with_toxic=with_,
            converge=conv,
        )
        assert with_.p50 is not None and without.p50 is not None
        assert with_.p50 > without.p50 + SLICER_MIN_ADDED_P50[api], (without, with_)
        assert sc.datastore.watches_started == watches  # the watch survived the slicing
        assert sc.datastore.invalid_values == 0
        assert sc.datastore.resyncs == 1


async def etcd_outage(sc, toxic_type: str, label: str, wait: float) -> float:  # type: ignore[no-untyped-def]
    """A ``toxic_type`` toxic (timeout=0) on the etcd leg until Typha reports etcd down, kept
    1 s more, then removed; waits for the sync to return, converges and records the figure.
    Returns how long the outage took to detect."""
    watches = sc.datastore.watches_started
    toxic = await sc.add_toxic(sc.etcd_proxy, toxic_type, timeout=0)
    down = await wait_until(lambda: not sc.feed.connected, wait, "Typha sees etcd down")
    await trio.sleep(1.0)
    await sc.remove_toxic(sc.etcd_proxy, toxic)
    up = await wait_until(lambda: sc.feed.connected and sc.feed.in_sync, wait, "etcd back")
    conv = await sc.finish()
    figure(
        label,
        detected=ms(down),
        back_after_removal=ms(up),
        watches_restarted=sc.datastore.watches_started - watches,
        resyncs=sc.datastore.resyncs,
        clients_told_wait_for_datastore=saw_wait_for_datastore(sc),
        converge=conv,
    )
    return down


@pytest.mark.toxiproxy
async def test_reset_peer(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, etcd_leg=True) as sc:
        await sc.baseline(1.0)
        watches = sc.datastore.watches_started
        await etcd_outage(sc, "reset_peer", "etcd-leg reset_peer", 20)
        assert sc.datastore.watches_started > watches
        assert sc.datastore.resyncs == 1  # resumed the watch from its revision: no relist
        assert saw_wait_for_datastore(sc) == len(sc.clients)
        assert all(c.stats.snapshots == 1 and c.stats.disconnects == 0 for c in sc.clients)


def _progress_notify_args(interval: str = "1s") -> list[str]:
    binary = find_etcd()
    assert binary
    flags = _binary_info(binary)[1]
    name = (
        "--watch-progress-notify-interval"
        if "--watch-progress-notify-interval" in flags
        else "--experimental-watch-progress-notify-interval"
    )
    return [f"{name}={interval}"]


@pytest.mark.toxiproxy
async def test_timeout_blackhole(etcd_factory, toxiproxy_server) -> None:
    """etcd's replies silently dropped (timeout=0, connections kept open): the watch goes
    silent. Typha notices through its watch idle timeout (3 s here, with etcd sending progress
    notifications every 1 s; the defaults are 660 s and etcd's 10 min) and its request
    timeout (3 s), reports the datastore down, and resumes the watch when the toxic goes."""
    etcd = etcd_factory(extra_args=_progress_notify_args("1s"))
    async with etcd_scenario(
        etcd,
        toxiproxy_server,
        etcd_leg=True,
        ds_kwargs={
            "watch_idle_timeout": 3.0,
            "access": EtcdAccess(request_timeout=3.0, connect_timeout=3.0),
        },
    ) as sc:
        await sc.baseline(1.0)
        watches = sc.datastore.watches_started
        down = await etcd_outage(sc, "timeout", "etcd-leg timeout(0) blackhole", 30)
        assert 2.5 < down < 20, down
        assert sc.datastore.watches_started > watches
        assert sc.datastore.resyncs == 1
        assert all(c.stats.snapshots == 1 for c in sc.clients)


@pytest.mark.toxiproxy
async def test_limit_data(etcd_server, toxiproxy_server) -> None:
    """Every connection to etcd is closed after 16 kB from etcd: the watch breaks mid-message
    again and again (a partial NDJSON line must be dropped, not applied) and is resumed from
    the last complete revision each time."""
    async with etcd_scenario(etcd_server, toxiproxy_server, etcd_leg=True) as sc:
        base = await sc.baseline(1.0)
        watches = sc.datastore.watches_started
        toxic = await sc.add_toxic(sc.etcd_proxy, "limit_data", bytes=16000)
        bad = await sc.window(4.0)
        await sc.remove_toxic(sc.etcd_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        restarted = sc.datastore.watches_started - watches
        figure(
            "etcd-leg limit_data 16kB",
            watches_restarted=restarted,
            resyncs=sc.datastore.resyncs,
            without=without,
            with_toxic=with_,
            converge=conv,
        )
        assert restarted >= 3, restarted
        assert sc.datastore.invalid_values == 0
        assert all(c.stats.snapshots == 1 for c in sc.clients)


async def test_etcd_sigkill_and_restart(etcd_server) -> None:
    """SIGKILL etcd under churn: Typha reports not-ready (/readiness 503) and tells clients
    WAIT_FOR_DATASTORE while it is gone, keeps serving its cache, and after the restart resumes
    its watch (no relist), becomes ready and every client converges."""
    async with etcd_scenario(etcd_server, app=True) as sc:
        await sc.baseline(1.0)
        assert await sc.readiness() == 200
        watches = sc.datastore.watches_started
        t_kill = time.monotonic()
        await blocking(etcd_server.kill)
        down = await wait_until(lambda: not sc.feed.connected, 20, "Typha sees etcd down")
        not_ready = await wait_until_async(lambda: sc.readiness(), 503, 20)
        await trio.sleep(1.5)
        await blocking(etcd_server.start)
        failures = sc.churn.failures
        outage = time.monotonic() - t_kill
        t_up = time.monotonic()
        await wait_until(lambda: sc.feed.connected and sc.feed.in_sync, 30, "Typha back in sync")
        await wait_until_async(lambda: sc.readiness(), 200, 30)
        ready_after = time.monotonic() - t_up
        await sc.window(1.0)
        conv = await sc.finish()
        figure(
            "etcd SIGKILL+restart",
            outage=ms(outage),
            typha_detected=ms(down),
            readiness_503_after=ms(down + not_ready),
            ready_after_restart=ms(ready_after),
            watches_restarted=sc.datastore.watches_started - watches,
            resyncs=sc.datastore.resyncs,
            churn_writes_failed=failures,
            clients_told_wait_for_datastore=saw_wait_for_datastore(sc),
            converge=conv,
        )
        assert failures > 0  # the churn really hit a dead etcd
        assert sc.datastore.resyncs == 1  # resumed by revision: no relist
        assert sc.datastore.watches_started > watches
        assert saw_wait_for_datastore(sc) == len(sc.clients)
        assert all(c.stats.snapshots == 1 and c.stats.disconnects == 0 for c in sc.clients)


async def wait_until_async(probe, want: int, timeout: float) -> float:
    """Poll an async probe until it returns ``want``; return the seconds it took."""
    t0 = time.monotonic()
    got = None
    with trio.move_on_after(timeout):
        while (got := await probe()) != want:
            await trio.sleep(0.1)
    assert got == want, f"still {got} after {timeout}s (want {want})"
    return time.monotonic() - t0


@pytest.mark.toxiproxy
async def test_compaction_under_load(etcd_server, toxiproxy_server) -> None:
    """Compaction while churn runs. Control: compacting while Typha's watch is caught up does
    nothing to it. Then Typha falls behind (its etcd leg down for 2 s) while churn goes on and
    etcd compacts: its resumed watch is refused, it relists (resync "compacted"), and clients
    see the differences as ordinary deltas — no second snapshot."""
    async with etcd_scenario(etcd_server, toxiproxy_server, etcd_leg=True) as sc:
        await sc.baseline(1.0)
        # Control: a caught-up watch is not affected by compaction.
        await blocking(etcd_server.compact)
        await sc.window(1.5)
        assert sc.datastore.resyncs == 1
        before = sc.stats()
        kvs = {id(c): c.stats.kvs for c in sc.clients}
        writes = sc.churn.writes
        # Typha falls behind; etcd compacts past it while churn goes on.
        await blocking(sc.toxi.client.set_enabled, sc.etcd_proxy, False)
        await wait_until(lambda: not sc.feed.connected, 20, "Typha sees etcd down")
        await trio.sleep(1.0)
        compacted_at = await blocking(etcd_server.compact)
        behind = compacted_at - (sc.datastore.revision or 0)
        await trio.sleep(1.0)
        await blocking(sc.toxi.client.set_enabled, sc.etcd_proxy, True)
        resynced = await wait_until(
            lambda: sc.datastore.resyncs == 2 and sc.feed.in_sync, 30, "resync after compaction"
        )
        await sc.window(1.0)
        conv = await sc.finish()
        d = delta(sc.stats(), before)
        per_client = sorted(c.stats.kvs - kvs[id(c)] for c in sc.clients)
        figure(
            "compaction under load",
            typha_behind_by_revisions=behind,
            resync_done_after_reconnect=ms(resynced),
            resyncs=sc.datastore.resyncs,
            kvs_per_client_since=f"{per_client[0]}..{per_client[-1]}",
            writes_since=sc.churn.writes - writes,
            snapshots=d["snapshots"],
            converge=conv,
        )
        assert behind > 10, behind
        assert sc.datastore.resyncs == 2
        assert d["snapshots"] == 0 and d["disconnects"] == 0, d
        assert all(c.stats.snapshots == 1 for c in sc.clients)
        # Clients got at most one KV per real change, not the whole data set again.
        assert per_client[-1] <= sc.churn.writes - writes, (per_client, sc.churn.writes - writes)
