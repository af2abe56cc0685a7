"""Two real ``typha serve`` processes on one real etcd, pointing at each other with
TYPHA_REDIRECTADDRS, 30 clients given both addresses, churn running throughout.

1. SIGKILL replica A: its clients lose their connections with no Goodbye, move to B and
   converge exactly.
2. A is started again; SIGTERM replica B (ShutdownTimeoutSecs=2): every client gets a Goodbye
   naming A, moves there, mostly by resume; B exits 0. Exact convergence again.

Resumes vs snapshots are counted for both moves, and the snapshots each receiving replica
built are read from its /metrics (typha_snapshots_generated).
"""

from __future__ import annotations

import signal

import pytest
import trio

from tests.peers.ports import free_ports
from typha.protocol import SyncStatus

from .harness import (
    EtcdChurn,
    LatencyProbe,
    TyphaProcess,
    assert_exact,
    blocking,
    converge,
    converge_to_etcd,
    delta,
    etcd_felix_state,
    figure,
    ms,
    start_clients,
    stats_of,
    wait_until,
)

N_CLIENTS = 30


async def test_two_replicas_sigkill_then_sigterm(etcd_server, tmp_path) -> None:
    churn = EtcdChurn(etcd_server.client_url)
    await churn.populate()
    port_a, port_b = free_ports(2)
    common = {
        "TYPHA_DATASTORETYPE": "etcdv3",
        "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
        "TYPHA_SHUTDOWNTIMEOUTSECS": "2",
        "TYPHA_SERVERPINGINTERVALSECS": "1",
    }
    a = TyphaProcess(
        "a", tmp_path, port=port_a, env={**common, "TYPHA_REDIRECTADDRS": f"127.0.0.1:{port_b}"}
    )
    b = TyphaProcess(
        "b", tmp_path, port=port_b, env={**common, "TYPHA_REDIRECTADDRS": f"127.0.0.1:{port_a}"}
    )
    try:
        a.start()
        b.start()
        await a.wait_ready()
        await b.wait_ready()
        async with trio.open_nursery() as nursery:
            await nursery.start(churn.run)
            clients = await start_clients(
                nursery, [a.address, b.address], N_CLIENTS, probe=LatencyProbe()
            )
            on_a = [c for c in clients if c.connected_to == a.address]
            assert 3 <= len(on_a) <= N_CLIENTS - 3, len(on_a)  # shuffled addresses spread them
            await trio.sleep(1.0)

            # --- 1. SIGKILL A ------------------------------------------------------------------
            before = stats_of(on_a)
            snaps_b = await b.snapshots_generated()
            a.signal(signal.SIGKILL)
            assert await a.wait_exit() == -signal.SIGKILL
            moved = await wait_until(
                lambda: all(c.connected_to == b.address and c.stats.disconnects for c in on_a),
                30,
                "A's clients on B",
            )
            await trio.sleep(0.5)
            await churn.halt()
            conv1 = await converge_to_etcd(clients, etcd_server)
            d1 = delta(stats_of(on_a), before)
            built_b = await b.snapshots_generated() - snaps_b
            figure(
                "replica SIGKILL",
                clients_moved=len(on_a),
                moved_in=ms(moved),
                resumes=d1["resumes"],
                snapshots=d1["snapshots"],
                goodbyes=d1["goodbyes"],
                connect_failures=sum(c.stats.connect_failures for c in on_a),
                snapshots_built_by_b=built_b,
                converge=conv1,
            )
            assert d1["goodbyes"] == 0  # a SIGKILL says nothing
            assert d1["resumes"] + d1["snapshots"] >= len(on_a)
            assert all(c.connected_to == b.address for c in clients)

            # --- 2. A back, SIGTERM B ------------------------------------------------------------
            a.start()
            await a.wait_ready()
            await nursery.start(churn.run)
            await trio.sleep(1.5)  # history on A beyond its initial list
            before = stats_of(clients)
            snaps_a = await a.snapshots_generated()
            b.signal(signal.SIGTERM)
            moved = await wait_until(
                lambda: all(
                    c.connected_to == a.address and c.status is SyncStatus.IN_SYNC for c in clients
                ),
                30,
                "every client on A",
            )
            code = await b.wait_exit(20)
            await churn.halt()
            conv2 = await converge_to_etcd(clients, etcd_server)
            d2 = delta(stats_of(clients), before)
            built_a = await a.snapshots_generated() - snaps_a
            figure(
                "replica SIGTERM drain",
                clients_moved=len(clients),
                moved_in=ms(moved),
                goodbyes=d2["goodbyes"],
                resumes=d2["resumes"],
                snapshots=d2["snapshots"],
                snapshots_built_by_a=built_a,
                exit_code=code,
                converge=conv2,
            )
            assert code == 0, b.log_tail()
            assert d2["goodbyes"] == len(clients), (
                d2,
                [(c.node, c.stats.last_error) for c in clients if c.stats.last_goodbye == ""],
            )
            assert all(c.stats.last_goodbye == "server shutting down" for c in clients)
            assert d2["resumes"] >= 0.8 * len(clients), d2
            assert built_a <= 1, built_a
            nursery.cancel_scope.cancel()
    finally:
        a.reap()
        b.reap()


@pytest.mark.toxiproxy
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_warm_restart_under_churn(etcd_server, toxiproxy_server, tmp_path, sig) -> None:
    """One ``typha serve`` with a warm-restart file (TYPHA_CACHEFILEPATH, saved every second)
    is stopped under churn and started again on the same port. It loads the file (same epoch)
    and watches etcd from the saved revision.

    * SIGTERM (the control): the file is saved after the drain, so it holds everything any
      client has seen.
    * SIGKILL: the file is up to ~1 s old, so clients may hold sequence numbers it never saw.
      The restarted Typha loads it but takes a new epoch; clients resume by revision. (Before
      that fix, it renumbered replayed changes with sequence numbers clients already held, and
      late clients resumed by sequence number past changes they never received.)

    12 clients connect directly and come back as soon as Typha listens again; 12 connect
    through a toxiproxy proxy that stays down until the restarted Typha's head sequence number
    has passed theirs (a client in backoff, or behind a slow network, is that late). Every one
    of the 24 must converge exactly."""
    churn = EtcdChurn(etcd_server.client_url)
    await churn.populate()
    typha = TyphaProcess(
        "warm",
        tmp_path,
        env={
            "TYPHA_DATASTORETYPE": "etcdv3",
            "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
            "TYPHA_CACHEFILEPATH": str(tmp_path / "typha-cache.bin"),
            "TYPHA_CACHESAVEINTERVALSECS": "1",
            "TYPHA_SERVERPINGINTERVALSECS": "1",
            "TYPHA_SHUTDOWNTIMEOUTSECS": "1",
        },
    )
    tox = toxiproxy_server.client
    try:
        typha.start()
        await typha.wait_ready()
        proxy = await blocking(tox.create_proxy, "typha", typha.address)
        async with trio.open_nursery() as nursery:
            await nursery.start(churn.run)
            direct = await start_clients(nursery, [typha.address], 12, prefix="direct")
            late = await start_clients(nursery, [proxy.listen], 12, prefix="late")
            clients = direct + late
            await trio.sleep(2.5)  # a few saves
            before = stats_of(clients)
            await blocking(tox.set_enabled, "typha", False)
            typha.signal(sig)
            assert await typha.wait_exit() == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            old_seq = max(c.seq for c in clients)
            await trio.sleep(1.0)
            typha.start()
            restarted = await typha.wait_ready()
            await wait_until(
                lambda: all(c.stats.disconnects and c.in_sync.is_set() for c in direct),
                30,
                "direct clients back",
            )

            async def head() -> int:
                status = (await typha.get(typha.health_port, "/status")).json()
                return int(status["views"]["felix"]["head_seq"])

            with trio.fail_after(30):
                while (h := await head()) <= old_seq + 2:
                    await trio.sleep(0.1)
            await blocking(tox.set_enabled, "typha", True)
            await wait_until(
                lambda: (
                    all(c.stats.disconnects and c.connected_to for c in late)
                    and all(c.stats.resumes + c.stats.snapshots > 1 for c in late)
                ),
                30,
                "late clients back",
            )
            await trio.sleep(1.0)
            await churn.halt()
            expected = (await blocking(etcd_felix_state, etcd_server))[0]
            conv_direct = await converge(direct, expected, timeout=10)
            conv_late = await converge(late, expected, timeout=10)
            d = delta(stats_of(clients), before)
            # After a crash the file may be older than what clients hold: it is loaded, but
            # with a new epoch, so clients resume by revision (never by stale sequence numbers).
            result = "loaded" if sig == signal.SIGTERM else "loaded-unclean"
            loaded = await typha.metric("typha_warm_restart_loads_total", result=result)
            figure(
                f"warm restart after {sig.name}",
                restart_ready=ms(restarted),
                cache_loaded=loaded,
                client_seq_before_kill=old_seq,
                head_seq_when_late_clients_came=h,
                resumes=d["resumes"],
                snapshots=d["snapshots"],
                converge_direct=conv_direct,
                converge_late=conv_late,
            )
            assert loaded == 1
            # Every client resumed without a snapshot (SIGTERM: by sequence number in the kept
            # epoch; SIGKILL: by revision in a new epoch) and holds exactly etcd's state.
            assert d["snapshots"] == 0
            assert_exact(conv_late, 10)
            assert_exact(conv_direct, 10)
            nursery.cancel_scope.cancel()
    finally:
        typha.reap()
