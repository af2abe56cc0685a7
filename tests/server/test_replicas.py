"""Two replicas on one datastore: draining one moves its clients to the other, mostly by
resume, and the other builds at most one snapshot for the whole move."""

from __future__ import annotations

import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha.sync.memory import MemoryDatastore

from ..peers.ports import free_ports


async def test_drain_one_of_two_replicas_under_200_clients() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(1000)))
    port_a, port_b = free_ports(2)
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    cfg_a = make_config(ServerPort=port_a, ShutdownTimeoutSecs=3, RedirectAddrs=addr_b)
    cfg_b = make_config(ServerPort=port_b)
    async with run_typha(ds, cfg_b) as b, run_typha(ds, cfg_a) as a, trio.open_nursery() as nursery:
        clients = [SyncClient([addr_a, addr_b], f"node{i}", backoff_cap=0.5) for i in range(200)]
        for c in clients:
            nursery.start_soon(c.run)
        await wait_until(lambda: all(c.in_sync.is_set() for c in clients), 60)
        on_a = [c for c in clients if c.connected_to == addr_a]
        assert 50 < len(on_a) < 150  # shuffled addresses spread the clients
        ds.set(*wep(1, rev=1))  # some history on both replicas
        await wait_until(lambda: all(c.state == ds.data for c in clients))
        snaps_b = b.server.snapshots["felix"].generated
        async with trio.open_nursery() as drain:
            drain.start_soon(a.server.drain)
            for i in range(20):  # churn during the drain
                ds.set(*wep(i, rev=2))
                await trio.sleep(0.05)
        await wait_until(lambda: len(b.server.connections) == 200, 30)  # handshakes done
        await wait_until(lambda: all(c.state == ds.data for c in clients), 30)
        assert all(c.connected_to == addr_b for c in clients)
        moved = on_a
        resumed = sum(1 for c in moved if c.stats.resumes >= 1)
        assert resumed >= 0.9 * len(moved), (resumed, len(moved))
        assert all(c.stats.goodbyes == 1 for c in moved)
        assert b.server.snapshots["felix"].generated - snaps_b <= 1
        assert len(b.server.connections) == 200
        nursery.cancel_scope.cancel()


async def test_connection_limit_sheds_excess_with_goodbye_suggesting_other_replica() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    port_a, port_b = free_ports(2)
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    cfg_a = make_config(
        ServerPort=port_a,
        RedirectAddrs=addr_b,
        ConnectionDropIntervalSecs=0.05,
        MaxConnectionsLowerLimit=1,
    )
    cfg_b = make_config(ServerPort=port_b)
    async with run_typha(ds, cfg_b) as b, run_typha(ds, cfg_a) as a, trio.open_nursery() as nursery:
        clients = [SyncClient([addr_a], f"n{i}", backoff_cap=0.2) for i in range(10)]
        for c in clients:
            nursery.start_soon(c.run)
        await wait_until(lambda: len(a.server.connections) == 10)
        # Positive control: under the limit nothing is shed.
        await trio.sleep(0.3)
        assert len(a.server.connections) == 10 and all(c.stats.goodbyes == 0 for c in clients)
        a.server.set_connection_limit(6)
        await wait_until(
            lambda: len(a.server.connections) <= 6 and len(b.server.connections) >= 4, 10
        )
        shed = [c for c in clients if c.stats.goodbyes]
        assert len(shed) >= 4 and all("rebalancing" in c.stats.last_goodbye for c in shed)
        await wait_until(lambda: all(c.state == ds.data for c in clients))
        nursery.cancel_scope.cancel()
