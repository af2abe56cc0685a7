"""The Kubernetes datastore with toxics on the apiserver leg: Typha (in-process,
``KubernetesDatastore``) → toxiproxy → kube-apiserver (real, the session one).

Pods are created, relabelled (stamped) and deleted through the apiserver directly at 10/s in a
namespace of this test; 24 clients follow. Latency with jitter, then reset_peer, on the
apiserver leg; then exact convergence of the clients' workload endpoints for that namespace
against a plain list of its pods converted with ``k8s_to_updates``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import uuid
from typing import Any

import pytest
import trio

from load.lightclient import STAMP_LABEL
from tests.typha_harness import make_config, run_typha
from typha.k8s.client import KubeClient, KubeError, resource_path
from typha.k8s.kubeconfig import KubeConfig
from typha.model.keys import SyncerType, syncer_types_for
from typha.sync.convert import k8s_to_updates
from typha.sync.kubernetes import KubernetesDatastore

from .harness import (
    CONVERGE_SECS,
    LatencyProbe,
    assert_exact,
    blocking,
    converge,
    figure,
    ms,
    normalise,
    start_clients,
    wait_until,
)

pytestmark = [pytest.mark.toxiproxy, pytest.mark.k8s]

N_PODS = 60
RATE = 10.0


def pod_body(ns: str, i: int, version: int, stamp: float | None = None) -> dict[str, Any]:
    labels = {"app": f"a{i % 3}", "ver": str(version)}
    if stamp is not None:
        labels[STAMP_LABEL] = f"{stamp:.6f}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{i}",
            "namespace": ns,
            "labels": labels,
            # What Calico's CNI plugin writes at network set-up.
            "annotations": {"cni.projectcalico.org/podIP": f"10.70.{i // 256}.{i % 256}/32"},
        },
        "spec": {
            "nodeName": f"knode{i % 4}",
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }


class KubeChurn:
    """Pods created, relabelled and deleted through the apiserver (directly) at a fixed rate."""

    def __init__(self, kube: KubeClient, ns: str, *, rate: float = RATE, seed: int = 3):
        self.kube, self.ns, self.rate = kube, ns, rate
        self.rng = random.Random(seed)
        self.live: dict[int, int] = {}
        self.next_index = 0
        self.writes = self.failures = 0
        self._stop = trio.Event()
        self.done = trio.Event()

    @property
    def pods(self) -> str:
        return resource_path("v1", "pods", namespace=self.ns)

    async def populate(self, n: int) -> None:
        for i in range(n):
            await self.kube.create(self.pods, pod_body(self.ns, i, 0))
            self.live[i] = 0
        self.next_index = n

    async def step(self) -> None:
        r = self.rng.random()
        if len(self.live) < N_PODS * 0.9 or (r < 0.2 and len(self.live) < N_PODS * 1.1):
            i = self.next_index
            self.next_index += 1
            await self.kube.create(self.pods, pod_body(self.ns, i, 0, time.time()))
            self.live[i] = 0
            return
        i = self.rng.choice(list(self.live))
        if r < 0.4:
            await self.kube.delete(f"{self.pods}/pod-{i}", grace_period_seconds=0)
            del self.live[i]
        else:
            v = self.live[i] + 1
            labels = {"ver": str(v), STAMP_LABEL: f"{time.time():.6f}"}
            await self.kube.patch(f"{self.pods}/pod-{i}", {"metadata": {"labels": labels}})
            self.live[i] = v

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_t = trio.current_time()
        try:
            while not self._stop.is_set():
                try:
                    await self.step()
                    self.writes += 1
                except KubeError:
                    self.failures += 1
                next_t = max(next_t + 1 / self.rate, trio.current_time() - 1.0)
                await trio.sleep_until(next_t)
        finally:
            self.done.set()

    async def halt(self) -> None:
        self._stop.set()
        with trio.fail_after(15):
            await self.done.wait()


def pods_felix_state(server: Any, ns: str) -> dict[str, Any]:
    """Expected workload endpoints of ``ns``: one plain GET of its pods (not through the code
    under test), converted with ``k8s_to_updates``."""
    with server.http_client() as http:
        r = http.get(f"/api/v1/namespaces/{ns}/pods")
    r.raise_for_status()
    state: dict[str, Any] = {}
    for item in r.json()["items"]:
        item.setdefault("apiVersion", "v1")
        item.setdefault("kind", "Pod")
        for u in k8s_to_updates(item):
            if u.value is not None and SyncerType.FELIX in syncer_types_for(u.key):
                state[u.key] = normalise(u.value)
    return state


async def test_latency_then_reset_peer_on_apiserver_leg(kube_apiserver, toxiproxy_server) -> None:
    ns = f"faults-{uuid.uuid4().hex[:8]}"
    tox = toxiproxy_server.client
    admin = KubeConfig.load(kube_apiserver.kubeconfig_path)
    async with KubeClient(admin) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        churn = KubeChurn(kube, ns)
        try:
            await churn.populate(N_PODS)
            proxy = await blocking(
                tox.create_proxy, "apiserver", f"127.0.0.1:{kube_apiserver.port}"
            )
            cfg = dataclasses.replace(admin, server=f"https://{proxy.listen}")
            ds = KubernetesDatastore(cfg, backoff_cap=1.0)
            marker = f"/workload/k8s/{ns}%2f"

            def ours(key: str) -> bool:
                return marker in key

            async with (
                run_typha(ds, make_config(ServerPingIntervalSecs=1)) as typha,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(churn.run)
                probe = LatencyProbe()
                clients = await start_clients(nursery, [typha.address], 24, probe=probe)
                t0 = time.time()
                await trio.sleep(2.5)
                base = (t0, time.time() - 0.5)
                await blocking(tox.add_toxic, "apiserver", "latency", latency=200, jitter=100)
                t0 = time.time()
                await trio.sleep(3.0)
                bad = (t0, time.time())
                await blocking(tox.remove_toxic, "apiserver", "latency_downstream")

                # reset_peer: toxiproxy resets a connection when data flows through it, so it
                # cuts the busy pods watch (and any request) but not the 17 idle watches.
                pods_watches = ds.watches_started["pods"]
                await blocking(tox.add_toxic, "apiserver", "reset_peer", timeout=0)
                await wait_until(lambda: not typha.feed.connected, 20, "Typha sees a reset")
                await trio.sleep(1.0)
                await blocking(tox.remove_toxic, "apiserver", "reset_peer_downstream")
                reset_back = await wait_until(
                    lambda: (
                        typha.feed.connected
                        and typha.feed.in_sync
                        and ds.watches_started["pods"] > pods_watches
                    ),
                    30,
                    "pods watching again",
                )
                await trio.sleep(1.0)
                # The proxy down for 1 s: every connection closed, all 18 watches cut.
                before = dict(ds.watches_started)
                relists = ds.relists.total()
                await blocking(tox.set_enabled, "apiserver", False)
                await wait_until(lambda: not typha.feed.connected, 20, "Typha sees it down")
                await trio.sleep(1.0)
                await blocking(tox.set_enabled, "apiserver", True)
                down_back = await wait_until(
                    lambda: (
                        typha.feed.connected
                        and typha.feed.in_sync
                        and all(ds.watches_started[s] > before.get(s, 0) for s in ds.states)
                    ),
                    30,
                    "every type watching again",
                )
                await trio.sleep(1.0)
                await churn.halt()
                expected = await blocking(pods_felix_state, kube_apiserver, ns)
                conv = await converge(clients, expected, select=ours, timeout=CONVERGE_SECS)
                without, with_ = probe.summary(*base), probe.summary(*bad)
                figure(
                    "apiserver-leg latency 200±100ms, reset_peer, proxy down",
                    without=without,
                    with_toxic=with_,
                    pods_watches_after_reset=ds.watches_started["pods"] - pods_watches,
                    reset_back=ms(reset_back),
                    types_rewatched_after_down=sum(
                        1 for s in ds.states if ds.watches_started[s] > before.get(s, 0)
                    ),
                    relists_after_down=ds.relists.total() - relists,
                    down_back=ms(down_back),
                    churn_writes=churn.writes,
                    converge=conv,
                )
                assert_exact(conv)
                assert len(expected) >= 0.8 * N_PODS
                assert with_.p50 is not None and without.p50 is not None
                assert with_.p50 > without.p50 + 0.1, (without, with_)
                assert all(c.stats.snapshots == 1 and c.stats.disconnects == 0 for c in clients)
                nursery.cancel_scope.cancel()
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(30),
                contextlib.suppress(KubeError),
            ):
                await kube.delete_collection(churn.pods)
