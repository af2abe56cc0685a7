"""Typha core end to end on loopback: in-memory datastore → cache → server → sync clients."""

from __future__ import annotations

import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import run_typha
from typha.model.keys import workload_endpoint_key
from typha.sync.memory import MemoryDatastore


def wep(i: int, node: str = "node1") -> tuple[str, dict]:
    key = workload_endpoint_key(node, "k8s", f"ns/pod{i}", "eth0")
    return key, {
        "name": f"cali{i:011d}",
        "ipv4_nets": [f"10.0.{i // 250}.{i % 250}/32"],
        "labels": {"app": "x", "i": str(i)},
        "profile_ids": ["kns.ns"],
    }


async def wait_until(pred, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


async def test_snapshot_then_deltas() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "node1")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        assert client.state == ds.data
        for i in range(50, 80):
            ds.set(*wep(i))
        ds.delete(wep(3)[0])
        await wait_until(lambda: client.state == ds.data)
        assert client.stats.snapshots == 1
        nursery.cancel_scope.cancel()
