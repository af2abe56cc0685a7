"""Every metric family moves: a real Typha on a real etcd through one scenario — clients join
(msgpack and Calico's gob), churn, a slow client that needs its grace period, a resume and a
conflated catch-up, a protocol error, a shed connection, then a drain — and every family in
the Prometheus registry must have changed from its value before the start, except the few in
``CANNOT_MOVE`` (each with its reason, and each checked to have stayed put)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from prometheus_client import REGISTRY, Gauge

from felix_client.sync_client import SyncClient
from tests.peers.etcd import EtcdServer
from tests.server.gobclient import GoClient
from tests.server.rawclient import RawClient
from tests.typha_harness import wait_until
from typha.app import Typha
from typha.config import load_config
from typha.protocol import BatchDone, Goodbye, ResumeToken, SyncStatusMsg
from typha.protocol.framing import frame
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources, delete_resources

# Families this scenario cannot move, and why. A family listed here that does move fails the
# test too (the list would be stale).
CANNOT_MOVE: dict[str, str] = {
    "typha_logs_dropped": "needs a log sink that blocks for 1,000 records",
    "typha_log_errors": "needs a log handler that fails",
    "typha_updates_skipped_by_reason": "only the Kubernetes datastore filters churn by reason",
    "typha_datastore_probe_failures": "needs a hung etcd (tests/faults/test_etcd_hang.py)",
    "python_info": "a constant: the interpreter's version",
    "process_start_time_seconds": "a constant",
    "process_max_fds": "a constant: the file descriptor limit",
    "python_gc_objects_uncollectable": "only reference cycles with finalizers count",
}

V3 = "projectcalico.org/v3"
SETS = 1200  # x ~8 KB: a ~10 MB snapshot, more than the server's socket buffer can absorb


def netset(i: int, rev: int = 0) -> dict[str, Any]:
    nets = [f"10.{i % 250}.{(j + rev) % 250}.{j % 250}/32" for j in range(500)]
    return {
        "apiVersion": V3,
        "kind": "GlobalNetworkSet",
        "metadata": {"name": f"set-{i}", "labels": {"rev": str(rev)}},
        "spec": {"nets": nets},
    }


def registry_samples() -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in REGISTRY.collect():
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def zero_gauges_like_a_new_process() -> None:
    """Earlier tests in this process may have left typha's gauges where this scenario will put
    them (``typha_datastore_connected`` at 1, say); a new process starts them at 0."""
    for collector in list(REGISTRY._collector_to_names):
        if isinstance(collector, Gauge) and collector._name.startswith("typha_"):
            children = collector._metrics.values() if collector._labelnames else [collector]
            for child in list(children):
                child.set(0)


class Recorder:
    """Which families changed from their values before the scenario, at any checkpoint."""

    def __init__(self) -> None:
        self.before = registry_samples()
        self.moved: set[str] = set()

    def checkpoint(self) -> None:
        for name, samples in registry_samples().items():
            if samples != self.before.get(name, {}):
                self.moved.add(name)


def config(url: str, cache_file: Path):  # type: ignore[no-untyped-def]
    return load_config(
        environ={},
        overrides={
            "EtcdEndpoints": url,
            "ServerPort": -1,
            "ServerHost": "127.0.0.1",
            "LogFilePath": "none",
            "CacheFilePath": str(cache_file),
            "CacheSaveIntervalSecs": 1,
            "ServerMaxFallBehindSecs": 1,  # history ages out fast: grace and catch-up show
            "ServerPingIntervalSecs": 0.2,
            "ConnectionDropIntervalSecs": 0.1,
            "ShutdownTimeoutSecs": 1,
        },
    )


async def churn(etcd: EtcdClient, rounds: int, rev: int, pause: float = 0.1) -> None:
    for r in range(rounds):
        await apply_resources(etcd, [netset(i, rev=rev * 100 + r) for i in range(3)])
        await trio.sleep(pause)


async def test_every_metric_family_moves(etcd_server: EtcdServer, tmp_path: Path) -> None:
    zero_gauges_like_a_new_process()
    recorder = Recorder()
    url = etcd_server.client_url
    async with EtcdClient([url]) as etcd:
        await apply_resources(etcd, [netset(i) for i in range(SETS)])
        typha = Typha(config(url, tmp_path / "cache.msgpack"))  # no cache file yet: "missing"
        async with trio.open_nursery() as nursery:
            port = await nursery.start(typha.run)
            address = f"127.0.0.1:{port}"
            await wait_until(lambda: typha.feed.in_sync, 30)

            # --- Join: several at once (one snapshot built, reused), and Calico's gob client.
            # The catch-up client's address can be pointed at nothing for a while.
            target = [address]
            clients = [
                SyncClient(lambda: list(target), f"n{i}", backoff_base=0.1, backoff_cap=0.2)
                for i in range(4)
            ]
            for client in clients:
                nursery.start_soon(client.run)
            gob = GoClient(address, "felix")
            try:
                for client in clients:
                    with trio.fail_after(30):
                        await client.in_sync.wait()
                await gob.wait_for(lambda: gob.in_sync, "in sync")
                recorder.checkpoint()

                # --- A slow client: it reads nothing of its snapshot while the history ages
                # past ServerMaxFallBehindSecs; its grace period keeps its position.
                slow = await RawClient.connect(port, rcvbuf=4096)
                await slow.hello(node="slow", compressions=())
                await churn(etcd, 25, rev=1)
                recorder.checkpoint()
                await slow.read_until(lambda e: isinstance(e, BatchDone), timeout=60)
                await slow.read_until(lambda e: isinstance(e, SyncStatusMsg), timeout=30)
                assert not any(isinstance(e, Goodbye) for e in slow.events)
                await slow.aclose()  # (left unread, it would stay behind and keep its hold)

                # --- Churn: updates, a deletion, a rewrite of the same value, a bad value.
                await delete_resources(etcd, [netset(SETS - 1)])
                same = netset(0, rev=124)  # the last value written for set-0
                await apply_resources(etcd, [same])
                await etcd.put("/calico/resources/v3/projectcalico.org/globalnetworksets/bad", b"{")
                await churn(etcd, 5, rev=2)
                await wait_until(lambda: all(c.state == clients[0].state for c in clients), 30)
                recorder.checkpoint()

                # --- Resume (back at once) and conflated catch-up (back after the history
                # moved on by more than ServerMaxFallBehindSecs).
                resumer, catcher = clients[0], clients[1]
                resumer.drop_connection()
                await wait_until(lambda: resumer.stats.resumes >= 1, 10)
                target[0] = "127.0.0.1:1"  # refused: the clients stay away
                catcher.drop_connection()
                await churn(etcd, 20, rev=3)
                target[0] = address
                await wait_until(lambda: catcher.stats.catchups >= 1, 20)
                recorder.checkpoint()

                # --- A resume from seq 1 (all the state changed since): the shared snapshot
                # instead of a catch-up.
                hostile = await RawClient.connect(port)
                await hostile.hello(node="hostile", resume=ResumeToken(typha.server.epoch, 1, None))
                await hostile.read_until(lambda e: isinstance(e, BatchDone), timeout=30)
                await hostile.aclose()
                recorder.checkpoint()

                # --- Misbehaving clients: input held before a hello, a protocol error.
                early = await RawClient.connect(port)
                await early.stream.send_all(b"\x00\x00\x00")  # a frame header, never finished
                await wait_until(lambda: typha.server.context.input_budget.total > 0, 5)
                recorder.checkpoint()
                await early.aclose()
                garbage = await RawClient.connect(port)
                await garbage.hello(node="garbage")
                await garbage.read_until(lambda e: isinstance(e, BatchDone))
                await garbage.stream.send_all(frame(b"\xc1\xc1\xc1"))
                await garbage.read_until_closed()
                await garbage.aclose()

                # --- Shed: a lower connection limit drops one.
                n = len(typha.server.connections)
                typha.server.set_connection_limit(n - 1)
                await wait_until(lambda: len(typha.server.connections) < n, 10)
                typha.server.set_connection_limit(10000)
                await trio.sleep(1.5)  # a periodic cache save
                recorder.checkpoint()

                # --- Drain.
                await typha.drain_and_stop()
                recorder.checkpoint()
            finally:
                gob.close()
                nursery.cancel_scope.cancel()

    families = set(recorder.before) | set(registry_samples())
    unexplained = sorted(families - recorder.moved - CANNOT_MOVE.keys())
    assert not unexplained, f"families that never moved: {unexplained}"
    stale = sorted(CANNOT_MOVE.keys() & recorder.moved)
    assert not stale, f"listed as unable to move, but moved: {stale}"
    unknown = sorted(CANNOT_MOVE.keys() - families)
    assert not unknown, f"listed but not in the registry: {unknown}"
    assert typha.server.stopped.is_set()
