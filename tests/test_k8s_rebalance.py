"""Connection rebalancing across Typha replicas (typha/k8s_rebalance.py): Typha's formula, and
two real Typhas on a REAL kube-apiserver sharing clients as replicas and client waves arrive.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.kube_apiserver import KubeApiServer
from tests.typha_harness import make_config, run_typha
from typha import metrics
from typha.app import Typha, rebalance_settings
from typha.k8s.client import KubeClient, KubeError
from typha.k8s.kubeconfig import KubeConfig
from typha.k8s_rebalance import (
    K8sRebalancer,
    NodeCountUnavailable,
    connection_limit,
    connection_limit_with_reason,
    count_nodes,
    typha_replicas,
)
from typha.sync.kubernetes import KubernetesDatastore


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(pred: Any, timeout: float = 30.0, what: str = "") -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
    assert pred(), f"timed out after {timeout}s waiting for {what or pred}"


def typha_slice(name: str, service: str, ip: str, port: int, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": node}],
        "ports": [{"name": "calico-typha", "port": port, "protocol": "TCP"}],
    }


# --- the formula --------------------------------------------------------------------------------


def test_connection_limit_worked_examples() -> None:
    # docs/kubernetes.md, "Rebalancing": 4 syncer types, default limits [400, 10000].
    assert connection_limit(2000, 20) == 508  # 4 x (1 + 2400 // 19 // 1) = 4 x 127
    assert connection_limit(200, 3) == 484  # 4 x (1 + 120)
    # A lone Typha (or none found) takes the upper limit, whatever the node count.
    assert connection_limit_with_reason(5000, 1) == (10000, "lone typha")
    assert connection_limit(5000, 0) == 10000
    # Clamped to the lower and the upper limit.
    assert connection_limit_with_reason(10, 3) == (400, "configured lower limit")
    assert connection_limit_with_reason(100_000, 2) == (10000, "configured upper limit")
    assert connection_limit_with_reason(2000, 20) == (508, "fraction+20%")
    # Integer math exactly as Go: nodes * 120 / (typhas - 1) / 100, truncating each step.
    assert connection_limit(3, 2, lower=1) == 4 * (1 + 3)
    assert connection_limit(99, 7, lower=1) == 4 * (1 + 11880 // 6 // 100)  # 4 x 20
    assert connection_limit(0, 2, lower=1) == 4


@pytest.mark.parametrize(
    ("typhas", "nodes", "want", "reason"),
    [
        (1, 10, 101, "lone typha"),
        (10, 10, 11, "configured lower limit"),
        (10, 500, 101, "configured upper limit"),
        (2, 500, 101, "configured upper limit"),
    ],
)
def test_connection_limit_matches_typhas_own_table(
    typhas: int, nodes: int, want: int, reason: str
) -> None:
    # typha/pkg/k8s/rebalance_test.go: lower 11, upper 101, 3 syncer types.
    assert connection_limit_with_reason(nodes, typhas, 3, 11, 101) == (want, reason)


def test_replica_count_is_unique_ips_with_the_port() -> None:
    slices = [
        typha_slice("a", "calico-typha", "10.0.0.1", 5473, "n1"),
        typha_slice("b", "calico-typha", "10.0.0.2", 5473, "n2"),
        typha_slice("c", "calico-typha", "10.0.0.1", 5473, "n1"),  # same IP again
    ]
    not_ready = typha_slice("d", "calico-typha", "10.0.0.3", 5473, "n3")
    not_ready["endpoints"][0]["conditions"]["ready"] = False
    other_port = typha_slice("e", "calico-typha", "10.0.0.4", 9093, "n4")
    other_port["ports"][0]["name"] = "metrics"
    replicas = typha_replicas([*slices, not_ready, other_port], "calico-typha")
    assert replicas.count == 3  # not-ready counted (as Typha does), other port not
    assert set(replicas.ready_addrs) == {"10.0.0.1:5473", "10.0.0.2:5473"}


class _FakeServer:
    def __init__(self) -> None:
        self.max_connections = 0
        self.redirect_addrs: list[str] = []
        self.port = 5473

    def set_connection_limit(self, limit: int) -> None:
        self.max_connections = limit


class _FakeFeed:
    synced_once = False
    views: dict[str, Any] = {}


async def test_lookup_errors_mean_the_upper_limit() -> None:
    cfg = make_config(MaxConnectionsUpperLimit=777, MaxConnectionsLowerLimit=5)
    server = _FakeServer()
    with pytest.raises(NodeCountUnavailable):
        count_nodes(_FakeFeed())
    dead = KubeClient(KubeConfig(server="http://127.0.0.1:9"))
    async with dead:
        settings = rebalance_settings(cfg.replace(connection_rebalancing_mode="kubernetes"))
        assert settings is not None
        rb = K8sRebalancer(settings, server, _FakeFeed(), kube_client=dead, node_counter=lambda: 50)
        assert await rb.poll_once(dead) == 777
        assert rb.last_reason == "error" and server.max_connections == 777
    # Disabled unless ConnectionRebalancingMode=kubernetes: no settings, no task.
    assert rebalance_settings(cfg) is None
    assert Typha(cfg.replace(datastore_in_memory=True)).extra_tasks == []
    on = cfg.replace(datastore_in_memory=True, connection_rebalancing_mode="kubernetes")
    assert len(Typha(on).extra_tasks) == 1


# --- two real Typhas ----------------------------------------------------------------------------


@pytest.fixture
async def kube(kube_apiserver: KubeApiServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.load(kube_apiserver.kubeconfig_path)) as client:
        yield client


@pytest.mark.k8s
async def test_two_typhas_rebalance_as_replicas_and_client_waves_arrive(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ns = unique("rebal")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    node_names = [unique("rbnode") for _ in range(3)]
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    settings = {
        "ConnectionRebalancingMode": "kubernetes",
        "MaxConnectionsLowerLimit": 2,
        "MaxConnectionsUpperLimit": 1000,
        "K8sServicePollIntervalSecs": 0.5,
        "K8sNamespace": ns,
        "K8sServiceName": "calico-typha",
        "K8sPortName": "calico-typha",
        "ConnectionDropIntervalSecs": 0.1,
    }
    kcfg = KubeConfig.load(kube_apiserver.kubeconfig_path)
    try:
        for name in node_names:
            await kube.create("/api/v1/nodes", {"metadata": {"name": name}})
        async with (
            run_typha(KubernetesDatastore(kcfg), make_config(**settings)) as a,
            run_typha(KubernetesDatastore(kcfg), make_config(**settings)) as b,
            trio.open_nursery() as nursery,
        ):
            # EndpointSlices refuse loopback addresses, and this test may only talk to loopback:
            # the slices carry TEST-NET addresses that are translated back for redirects.
            ip_a, ip_b = "192.0.2.1", "192.0.2.2"
            to_loopback = {f"{ip_a}:{a.port}": a.address, f"{ip_b}:{b.port}": b.address}
            rebalancers = {}
            for typha, ip in ((a, ip_a), (b, ip_b)):
                settings = rebalance_settings(typha.cfg)
                assert settings is not None
                rb = K8sRebalancer(
                    settings,
                    typha.server,
                    typha.feed,
                    kube_client=kube,
                    self_addresses=[f"{ip}:{typha.port}"],
                    translate=lambda addr: to_loopback.get(addr, addr),
                )
                rebalancers[typha.address] = rb
                nursery.start_soon(rb.run)
            rb_a, rb_b = rebalancers[a.address], rebalancers[b.address]
            assert rb_b.self_addresses == {f"{ip_b}:{b.port}"}

            # Only A's endpoint exists: a lone Typha takes the upper limit.
            await kube.create(slices, typha_slice("a", "calico-typha", ip_a, a.port, "node-a"))
            polls = rb_a.polls
            await wait_until(lambda: rb_a.polls > polls + 1 and rb_a.last_typhas == 1)
            assert a.server.max_connections == 1000 and rb_a.last_reason == "lone typha"
            nodes = count_nodes(a.feed)
            assert nodes >= len(node_names)
            limit = connection_limit(nodes, 2, 4, 2, 1000)

            # Waves 1 and 2 all land on A (it is the only replica).
            def wave(n: int, addresses: list[str], tag: str) -> list[SyncClient]:
                clients = [
                    SyncClient(addresses, f"{tag}-{i}", "felix", backoff_base=0.02, backoff_cap=0.5)
                    for i in range(n)
                ]
                for c in clients:
                    nursery.start_soon(c.run)
                return clients

            clients = wave(limit, [a.address], "w1") + wave(limit // 2, [a.address], "w2")
            await wait_until(lambda: all(c.in_sync.is_set() for c in clients), what="waves 1+2")
            assert len(a.server.connections) == limit + limit // 2
            dropped = metrics.connections_dropped._value.get()
            await trio.sleep(0.5)  # a few governor ticks: under the limit, nothing is shed
            assert metrics.connections_dropped._value.get() == dropped

            # B appears: both compute the shared limit, A sheds its excess towards B.
            await kube.create(slices, typha_slice("b", "calico-typha", ip_b, b.port, "node-b"))
            await wait_until(
                lambda: a.server.max_connections == limit and b.server.max_connections == limit,
                what="both limits recomputed",
            )
            assert rb_a.last_typhas == 2 and rb_a.last_reason in (
                "fraction+20%",
                "configured lower limit",
            )
            assert a.server.redirect_addrs == [b.address]  # Goodbyes point at the other one
            assert b.server.redirect_addrs == [a.address]
            await wait_until(
                lambda: (
                    len(a.server.connections) == limit
                    and len(b.server.connections) == limit // 2
                    and all(c.connected_to and c.status is not None for c in clients)
                ),
                what="A shed its excess to B",
            )
            assert metrics.connections_dropped._value.get() - dropped >= limit // 2
            moved = [c for c in clients if c.connected_to == b.address]
            assert len(moved) == limit // 2 and all(c.stats.goodbyes >= 1 for c in moved)

            # Wave 3 knows both: A is full (refuses), so they end up on B.
            third = wave(limit - limit // 2, [a.address, b.address], "w3")
            everyone = clients + third
            await wait_until(
                lambda: (
                    len(a.server.connections) == limit
                    and len(b.server.connections) == limit
                    and all(c.in_sync.is_set() and c.connected_to for c in everyone)
                ),
                what="wave 3 balanced",
            )
            assert sum(1 for c in everyone if c.connected_to == a.address) == limit
            assert sum(1 for c in everyone if c.connected_to == b.address) == limit
            # Everyone has the same view of the datastore.
            nodes_key = f"/calico/resources/v3/projectcalico.org/nodes/{node_names[0]}"
            assert all(nodes_key in c.state for c in everyone)
            print(
                f"\nFIGURE rebalance: {nodes} nodes, 2 Typhas -> limit {limit} each; "
                f"{2 * limit} clients split {limit}/{limit}"
            )
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for name in node_names:
                with contextlib.suppress(KubeError):
                    await kube.delete(f"/api/v1/nodes/{name}")
            with contextlib.suppress(KubeError):
                await kube.delete_collection(slices)
