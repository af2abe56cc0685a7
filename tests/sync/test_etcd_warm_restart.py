"""Warm restart against a real etcd: the restarted Typha watches from its saved revision (no
full list), and reconnecting clients resume without snapshots — including the changes made
while Typha was down. Positive control: a compacted revision forces a list, and clients still
converge without a snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from felix_client.sync_client import SyncClient
from tests.peers.ports import free_ports
from tests.typha_harness import wait_until
from typha.app import Typha
from typha.config import load_config
from typha.resources import workload_endpoint_for_pod
from typha.sync.convert import convert_etcd_kv
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources, delete_resources
from typha.sync.synthetic import synthetic_updates


def pod(i: int, role: str = "a") -> dict:
    ip = f"10.1.{i // 250}.{i % 250 + 1}"
    return workload_endpoint_for_pod(f"node{i % 3}", "ns", f"pod-{i}", ip, {"role": role})


async def etcd_model(client: EtcdClient) -> dict:
    """What Typha serves for etcd's content: its keys plus the ones Typha adds itself."""
    state: dict = {u.key: u.value for u in synthetic_updates()}
    async for page in client.range_paginated("/calico/"):
        for kv in page.kvs:
            for u in convert_etcd_kv(kv.key, json.loads(kv.value)):
                if u.value is not None:
                    state[u.key] = u.value
    return state


def config(url: str, port: int, path: Path):  # type: ignore[no-untyped-def]
    return load_config(
        environ={},
        overrides={
            "EtcdEndpoints": url,
            "ServerPort": port,
            "ServerHost": "127.0.0.1",
            "LogFilePath": "none",
            "CacheFilePath": str(path),
            "ShutdownTimeoutSecs": 0.5,
        },
    )


async def test_warm_restart_resumes_from_saved_revision(etcd_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = etcd_server.client_url
    (port,) = free_ports(1)
    path = tmp_path / "cache.msgpack"
    async with EtcdClient([url]) as etcd:
        await apply_resources(etcd, [pod(i) for i in range(300)])
        clients = [SyncClient([f"127.0.0.1:{port}"], f"n{i}", backoff_cap=0.3) for i in range(10)]
        async with trio.open_nursery() as outer:
            first = Typha(config(url, port, path))
            async with trio.open_nursery() as n1:
                await n1.start(first.run)
                for c in clients:
                    outer.start_soon(c.run)
                # After the start-up writes (ClusterInformation, tiers): in sync means done.
                await wait_until(lambda: first.feed.in_sync, 30)
                want = await etcd_model(etcd)
                await wait_until(lambda: all(c.state == want for c in clients), 30)
                await first.drain_and_stop()

            # Changes while Typha is down.
            await apply_resources(etcd, [pod(1, "b"), pod(400)])
            await delete_resources(etcd, [pod(2)])
            want = await etcd_model(etcd)

            second = Typha(config(url, port, path))
            assert isinstance(second.datastore, EtcdDatastore)
            async with trio.open_nursery() as n2:
                await n2.start(second.run)
                await wait_until(lambda: all(c.state == want for c in clients), 30)
                await wait_until(lambda: second.feed.in_sync, 10)  # caught up → ready
                assert second.datastore.resyncs == 0  # no full list
                assert all(c.stats.snapshots == 1 for c in clients)
                assert all(c.stats.resumes >= 1 for c in clients)
                await second.drain_and_stop()

            # Positive control: compact past the saved revision; the next start must list.
            await apply_resources(etcd, [pod(3, "c")])
            await apply_resources(etcd, [pod(4, "c")])
            await etcd.compact(await etcd.revision())
            want = await etcd_model(etcd)
            third = Typha(config(url, port, path))
            async with trio.open_nursery() as n3:
                await n3.start(third.run)
                await wait_until(lambda: all(c.state == want for c in clients), 30)
                assert third.datastore.resyncs >= 1  # listed: the revision was gone
                assert all(c.stats.snapshots == 1 for c in clients)  # still no snapshot
                n3.cancel_scope.cancel()
            outer.cancel_scope.cancel()
