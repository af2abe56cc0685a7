"""The Kubernetes datastore's failure paths against a REAL kube-apiserver (tests/peers): a
missing CRD, a forced 410 relisting one type only, an apiserver restart under 50 clients."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.k8s.helpers import (
    calico,
    crd_body,
    kube_config,
    kvs_counter,
    pod_body,
    pods_path,
    unique,
    wait_until,
    wep_key,
)
from tests.peers.kube_apiserver import KubeApiServer, find_kube_apiserver
from tests.peers.plugin import CRD_DIR, require_binary
from tests.typha_harness import run_typha
from typha.k8s.client import (
    KubeClient,
    KubeError,
    resource_path,
)
from typha.model import keys
from typha.protocol import SyncStatus
from typha.sync.base import (
    DatastoreEvent,
    ResyncFinished,
    ResyncStarted,
    Updates,
)
from typha.sync.kubernetes import KDD_RESOURCES, KubernetesDatastore


@pytest.fixture(scope="module")
def fault_apiserver() -> Iterator[KubeApiServer]:
    """A private apiserver this module may stop, restart and compact under.

    Pods have no watch cache (``--watch-cache-sizes=pods#0``): pod watches are served by etcd,
    so compacting etcd makes an old pod resourceVersion expire (a real 410), while the other
    types keep being served from the watch cache.
    """
    binary = require_binary(
        find_kube_apiserver, "kube-apiserver", "scripts/build-peers.sh kube-apiserver"
    )
    server = KubeApiServer(binary=binary, extra_args=["--watch-cache-sizes=pods#0"])
    try:
        server.start()
        server.apply_crds(CRD_DIR)
        yield server
    finally:
        server.close()


# === datastore events: missing CRDs, scoped relists ============================================


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[DatastoreEvent] = []

    async def send(self, event: DatastoreEvent) -> None:
        self.events.append(event)


@pytest.mark.k8s
async def test_missing_crd_counts_as_listed_empty_and_is_retried(
    kube_apiserver: KubeApiServer,
) -> None:
    from typha.sync.kubernetes import ResourceType

    resources = (
        KDD_RESOURCES[1],  # namespaces
        ResourceType("nosuchthings", "NoSuchThing", "crd.projectcalico.org"),
    )
    ds = KubernetesDatastore(
        kube_config(kube_apiserver), resources=resources, missing_retry_secs=0.2
    )
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ds.run, sink)
        with trio.fail_after(10):
            await ds.in_sync.wait()
        await wait_until(lambda: ds.lists["namespaces"] == 1)
        await trio.sleep(0.7)  # a few retries of the missing type
        nursery.cancel_scope.cancel()
    assert ds.missing == {"nosuchthings.crd.projectcalico.org"}
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds[0] == "ConnectionStatus" and kinds[1] == "ResyncStarted"
    assert kinds.count("ResyncFinished") == 1  # the unscoped one; retries emit nothing
    assert isinstance(sink.events[1], ResyncStarted) and sink.events[1].scope is None
    updates = [e for e in sink.events if isinstance(e, Updates)]
    assert updates and all(u.scope == "namespaces" and u.revision is None for u in updates)
    assert ds.watches_started["namespaces"] == 1  # the served type went on to watch


@pytest.mark.k8s
async def test_forced_410_relists_that_type_only_without_loss(
    fault_apiserver: KubeApiServer,
) -> None:
    ns = unique("expire")
    node = unique("node")
    cfg = kube_config(fault_apiserver)
    sink_events: list[DatastoreEvent] = []
    async with KubeClient(cfg) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(3):
            await kube.create(pods_path(ns), pod_body(ns, f"p{i}", node, ip=f"10.6.0.{i + 1}"))
        # Short server-side watch timeouts: the pod watch is re-opened every ~2 s from its
        # last resourceVersion, which the compaction below makes expire.
        ds = KubernetesDatastore(cfg, watch_timeout_secs=2)
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            original_send = typha.feed.send

            async def recording_send(event: DatastoreEvent) -> None:
                sink_events.append(event)
                await original_send(event)

            # Record what the datastore emits from now on (the feed is its sink).
            typha.feed.send = recording_send  # type: ignore[method-assign]
            client = SyncClient([typha.address], node, "felix")
            nursery.start_soon(client.run)
            await wait_until(lambda: wep_key(node, ns, "p2") in client.state, what="pods")
            # Real changes: one pod deleted, one added; the client sees both.
            await kube.delete(pods_path(ns, "p0"), grace_period_seconds=0)
            await kube.create(pods_path(ns), pod_body(ns, "p3", node, ip="10.6.0.4"))
            await wait_until(
                lambda: (
                    wep_key(node, ns, "p3") in client.state
                    and wep_key(node, ns, "p0") not in client.state
                ),
                what="real changes",
            )
            counts = kvs_counter(client)
            relists_before = dict(ds.relists)
            # Move etcd on (non-pod writes) and compact: the pod watch's resourceVersion is gone.
            for i in range(3):
                await kube.create(
                    resource_path("v1", "configmaps", namespace=ns),
                    {"metadata": {"name": f"cm{i}"}},
                )
            await trio.to_thread.run_sync(fault_apiserver.etcd.compact)  # type: ignore[union-attr]
            await wait_until(
                lambda: ds.relists["pods"] > relists_before.get("pods", 0), 15, "pod relist"
            )
            await trio.sleep(0.5)
            # Exactly one type relisted; the others kept watching.
            assert ds.expired["pods"] >= 1
            assert {s: c for s, c in ds.relists.items() if c != relists_before.get(s, 0)} == {
                "pods": ds.relists["pods"] - relists_before.get("pods", 0)
            }
            scoped = [e for e in sink_events if isinstance(e, ResyncStarted | ResyncFinished)]
            assert scoped and all(e.scope == "pods" for e in scoped)
            assert isinstance(scoped[-1], ResyncFinished)
            # Nothing changed during the relist, so the client got nothing...
            assert counts == [0, 0]
            assert client.status is SyncStatus.IN_SYNC
            # ...and nothing was lost: the client holds exactly the pods that exist.
            live = {wep_key(node, ns, f"p{i}") for i in (1, 2, 3)}
            assert {k for k in client.state if f"/{ns}%2f" in k} == live
            # Positive control: the re-established watch still delivers.
            await kube.delete(pods_path(ns, "p1"), grace_period_seconds=0)
            await wait_until(
                lambda: wep_key(node, ns, "p1") not in client.state, what="after relist"
            )
            nursery.cancel_scope.cancel()


@pytest.mark.k8s
@pytest.mark.slow
async def test_apiserver_restart_with_50_clients_converges(
    fault_apiserver: KubeApiServer,
) -> None:
    ns = unique("restart")
    node = unique("node")
    cfg = kube_config(fault_apiserver)
    async with KubeClient(cfg) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(5):
            await kube.create(pods_path(ns), pod_body(ns, f"p{i}", node, ip=f"10.5.0.{i + 1}"))
        ds = KubernetesDatastore(cfg, backoff_cap=1.0)
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            clients = [SyncClient([typha.address], f"{node}-{i}", "felix") for i in range(50)]
            for c in clients:
                nursery.start_soon(c.run)
            await wait_until(
                lambda: all(wep_key(node, ns, "p4") in c.state for c in clients), 30, "50 clients"
            )
            counters = [kvs_counter(c) for c in clients]
            relists_before = dict(ds.relists)
            watches_before = dict(ds.watches_started)

            await trio.to_thread.run_sync(fault_apiserver.stop)
            await wait_until(
                lambda: all(c.status is SyncStatus.WAIT_FOR_DATASTORE for c in clients),
                30,
                "clients told the datastore is gone",
            )
            assert not typha.feed.connected
            t0 = time.monotonic()
            await trio.to_thread.run_sync(fault_apiserver.start)
            restart_secs = time.monotonic() - t0

            # Changes after the restart: one pod deleted, one added, one policy created.
            await kube.delete(pods_path(ns, "p0"), grace_period_seconds=0)
            await kube.create(pods_path(ns), pod_body(ns, "p5", node, ip="10.5.0.6"))
            gnp = unique("gnp")
            await kube.create(
                calico("globalnetworkpolicies"),
                crd_body("GlobalNetworkPolicy", gnp, {"selector": "all()"}),
            )
            want = {wep_key(node, ns, f"p{i}") for i in range(1, 6)}
            gnp_key = keys.policy_key("GlobalNetworkPolicy", "", gnp)
            t0 = time.monotonic()
            await wait_until(
                lambda: all(
                    c.status is SyncStatus.IN_SYNC
                    and gnp_key in c.state
                    and {k for k in c.state if f"/{ns}%2f" in k} == want
                    for c in clients
                ),
                60,
                "50 clients converged",
            )
            converge_secs = time.monotonic() - t0
            assert typha.feed.connected
            # Clients saw only the three real changes, not the relists behind them.
            assert all(cnt[1] == 3 for cnt in counters), sorted({cnt[1] for cnt in counters})
            # Every type re-watched; the cached types had expired (410 → relist), while pods
            # (no watch cache: served by etcd, not compacted) resumed from their
            # resourceVersion without a relist.
            await wait_until(
                lambda: all(ds.watches_started[s] > watches_before.get(s, 0) for s in ds.states),
                30,
                "every type watching again",
            )
            relisted = {s for s, c in ds.relists.items() if c > relists_before.get(s, 0)}
            assert "pods" not in relisted
            assert relisted <= set(ds.expired)
            print(
                f"\nFIGURE apiserver restart: down+up {restart_secs:.1f}s, 50 clients converged "
                f"{converge_secs:.2f}s after it was back; relisted {len(relisted)} types "
                f"(expired), pods resumed"
            )
            with contextlib.suppress(KubeError):
                await kube.delete(f"{calico('globalnetworkpolicies')}/{gnp}")
            nursery.cancel_scope.cancel()
