"""Toxics on the client leg: node clients → toxiproxy → Typha (in-process) → etcd (real).

Each test: 24 clients in sync, churn on etcd at 25 writes/s, a baseline window, the toxic, its
removal, then exact convergence against a range read of etcd. Each also shows that the toxic
bit (latency measured with and without it, or reconnects counted in the clients' stats).
"""

from __future__ import annotations

import pytest
import trio

from felix_client.sync_client import SyncClient

from .harness import (
    LatencyStats,
    delta,
    etcd_scenario,
    figure,
    ms,
    wait_until,
)

pytestmark = pytest.mark.toxiproxy


async def test_latency_with_jitter(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, client_leg=True) as sc:
        base = await sc.baseline(2.0)
        toxic = await sc.add_toxic(sc.client_proxy, "latency", latency=250, jitter=100)
        bad = await sc.window(3.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure(
            "client-leg latency 250±100ms",
            without=without,
            with_toxic=with_,
            converge=conv,
        )
        assert without.n > 500 and with_.n > 500
        assert with_.p50 is not None and without.p50 is not None
        assert with_.p50 > without.p50 + 0.15, (without, with_)
        assert all(c.stats.snapshots == 1 for c in sc.clients)


async def test_bandwidth_limit(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, client_leg=True) as sc:
        base = await sc.baseline(2.0)
        toxic = await sc.add_toxic(sc.client_proxy, "bandwidth", rate=8)  # KB/s per connection
        bad = await sc.window(3.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        conv = await sc.finish()
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure("client-leg bandwidth 8KB/s", without=without, with_toxic=with_, converge=conv)
        assert with_.p50 is not None and without.p50 is not None
        assert with_.p95 is not None and with_.p95 > 0.4, with_
        assert with_.p50 > without.p50 + 0.2, (without, with_)
        assert all(c.stats.snapshots == 1 for c in sc.clients)


async def test_slicer(etcd_server, toxiproxy_server) -> None:
    """Frames cut into ~24-byte pieces, 0.8 ms apart: framing across any split, and a joiner's
    snapshot takes far longer through the slicer than without it."""
    async with etcd_scenario(etcd_server, toxiproxy_server, client_leg=True) as sc:
        address = sc.address

        async def join(name: str) -> SyncClient:
            c = SyncClient([address], name, backoff_cap=1.0)
            sc.nursery.start_soon(c.run)
            with trio.fail_after(60):
                await c.in_sync.wait()
            return c

        plain_joiner = await join("joiner-plain")
        base = await sc.baseline(1.0)
        toxic = await sc.add_toxic(
            sc.client_proxy, "slicer", average_size=24, size_variation=16, delay=800
        )
        sliced_joiner = await join("joiner-sliced")
        bad = await sc.window(2.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        sc.clients += [plain_joiner, sliced_joiner]
        conv = await sc.finish()
        plain_secs = plain_joiner.stats.snapshot_seconds[0]
        sliced_secs = sliced_joiner.stats.snapshot_seconds[0]
        without, with_ = sc.probe.summary(*base), sc.probe.summary(*bad)
        figure(
            "client-leg slicer 24±16B/0.8ms",
            snapshot_without=ms(plain_secs),
            snapshot_with=ms(sliced_secs),
            snapshot_bytes=sliced_joiner.stats.bytes,
            without=without,
            with_toxic=with_,
            converge=conv,
        )
        assert sliced_secs > max(0.1, 10 * plain_secs), (plain_secs, sliced_secs)
        assert all(c.stats.protocol_errors == 0 for c in sc.clients)
        assert all(c.stats.snapshots == 1 for c in sc.clients)


async def test_reset_peer(etcd_server, toxiproxy_server) -> None:
    async with etcd_scenario(etcd_server, toxiproxy_server, client_leg=True) as sc:
        await sc.window(1.0)
        before = sc.stats()
        toxic = await sc.add_toxic(sc.client_proxy, "reset_peer", timeout=0)
        await wait_until(
            lambda: all(c.stats.disconnects > 0 for c in sc.clients), 20, "every client reset"
        )
        await trio.sleep(1.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        back = await wait_until(
            lambda: all(c.stats.resumes > 0 and c.connected_to for c in sc.clients),
            30,
            "every client resumed",
        )
        await sc.window(1.0)
        conv = await sc.finish()
        d = delta(sc.stats(), before)
        figure("client-leg reset_peer", **d, back_after_removal=ms(back), converge=conv)
        assert d["disconnects"] >= len(sc.clients)
        assert d["resumes"] >= len(sc.clients)
        assert d["snapshots"] == 0  # every reconnect resumed
        assert all(c.stats.snapshots == 1 for c in sc.clients)


async def test_timeout_blackhole(etcd_server, toxiproxy_server) -> None:
    """Data from Typha silently dropped (timeout=0): the clients' read timeout (2 s here; Felix
    uses 30 s) must notice and reconnect; after the toxic goes they resume."""
    async with etcd_scenario(
        etcd_server, toxiproxy_server, client_leg=True, client_kwargs={"read_timeout": 2.0}
    ) as sc:
        await sc.window(1.0)
        before = sc.stats()
        toxic = await sc.add_toxic(sc.client_proxy, "timeout", timeout=0)
        detect = await wait_until(
            lambda: all(c.stats.read_timeouts > 0 for c in sc.clients), 20, "read timeouts"
        )
        await trio.sleep(1.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        marks = {id(c): c.stats.resumes for c in sc.clients}
        back = await wait_until(
            lambda: all(c.stats.resumes > marks[id(c)] for c in sc.clients),
            30,
            "clients back",
        )
        conv = await sc.finish()
        d = delta(sc.stats(), before)
        figure(
            "client-leg timeout(0) blackhole",
            **d,
            all_detected_after=ms(detect),
            back_after_removal=ms(back),
            converge=conv,
        )
        assert d["read_timeouts"] >= len(sc.clients)
        assert d["resumes"] >= len(sc.clients)
        # No client needed a second snapshot.
        assert all(c.stats.snapshots == 1 for c in sc.clients), d


async def test_limit_data(etcd_server, toxiproxy_server) -> None:
    """Every client connection is closed after 6 kB from Typha: clients reconnect again and
    again, each time resuming where they were, and make progress through the cuts."""
    async with etcd_scenario(etcd_server, toxiproxy_server, client_leg=True) as sc:
        await sc.window(1.0)
        before = sc.stats()
        toxic = await sc.add_toxic(sc.client_proxy, "limit_data", bytes=6000)
        bad = await sc.window(4.0)
        await sc.remove_toxic(sc.client_proxy, toxic)
        conv = await sc.finish()
        d = delta(sc.stats(), before)
        lat = LatencyStats.of(sc.probe.between(*bad))
        figure("client-leg limit_data 6kB", **d, latency_during=lat, converge=conv)
        assert d["disconnects"] >= 2 * len(sc.clients), d
        assert d["resumes"] >= 2 * len(sc.clients), d
        assert d["snapshots"] == 0, d
        assert all(c.stats.snapshots == 1 for c in sc.clients)
