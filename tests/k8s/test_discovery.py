"""Typha discovery from EndpointSlices created on a REAL kube-apiserver (typha.k8s.discovery).

Every check that something is left out sits next to a positive control that shows the same
path including what it should.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.kube_apiserver import KubeApiServer
from tests.typha_harness import run_typha
from typha.k8s.client import KubeClient, KubeError
from typha.k8s.discovery import (
    DiscoveryError,
    ServiceNotReady,
    addresses_from_slices,
    discover_typha,
    discover_typha_async,
    endpoint_slices_path,
)
from typha.k8s.kubeconfig import KubeConfig
from typha.sync.memory import MemoryDatastore


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def endpoint(ip: str, node: str | None, ready: bool | None = True) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {}}
    if ready is not None:
        ep["conditions"]["ready"] = ready
    if node:
        ep["nodeName"] = node
    return ep


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[dict[str, Any]],
    *,
    port: int = 5473,
    port_name: str = "calico-typha",
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


@pytest.fixture
async def kube(kube_apiserver: KubeApiServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.load(kube_apiserver.kubeconfig_path)) as client:
        yield client


@contextlib.asynccontextmanager
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    ns = unique("disc")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        yield ns
    finally:
        with trio.CancelScope(shield=True), contextlib.suppress(KubeError):
            await kube.delete_collection(endpoint_slices_path(ns))


def test_ordering_is_local_first_and_each_group_shuffled() -> None:
    slices = [
        endpoint_slice(
            "a",
            "calico-typha",
            [
                endpoint("10.0.0.1", "me"),
                endpoint("10.0.0.2", "me"),
                endpoint("10.0.0.3", "other"),
                endpoint("10.0.0.4", "other"),
                endpoint("10.0.0.5", None),
            ],
        )
    ]
    seen_local: set[tuple[str, ...]] = set()
    seen_remote: set[tuple[str, ...]] = set()
    rng = random.Random(1)
    for _ in range(50):
        addrs = addresses_from_slices(slices, "me", rng=rng)
        assert set(addrs[:2]) == {"10.0.0.1:5473", "10.0.0.2:5473"}
        assert set(addrs[2:]) == {"10.0.0.3:5473", "10.0.0.4:5473", "10.0.0.5:5473"}
        seen_local.add(tuple(addrs[:2]))
        seen_remote.add(tuple(addrs[2:]))
    assert len(seen_local) == 2 and len(seen_remote) > 1  # both groups are shuffled
    # No node name: everything is "remote".
    assert len(addresses_from_slices(slices, None)) == 5
    with pytest.raises(ServiceNotReady, match="service not ready"):
        addresses_from_slices([], "me")


@pytest.mark.k8s
async def test_discovery_from_endpoint_slices(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    async with namespace(kube) as ns:
        path = endpoint_slices_path(ns)
        slices = [
            endpoint_slice(
                "typha-v4",
                "calico-typha",
                [
                    endpoint("10.1.0.1", "node-a"),  # local
                    endpoint("10.1.0.2", "node-b"),
                    endpoint("10.1.0.3", "node-c", ready=False),  # not ready: left out
                    endpoint("10.1.0.4", "node-c", ready=None),  # readiness unknown: kept
                ],
            ),
            endpoint_slice(
                "typha-v6", "calico-typha", [endpoint("fd00::5", "node-a")], address_type="IPv6"
            ),
            # Same service, but a slice without the calico-typha port: left out.
            endpoint_slice(
                "typha-metrics",
                "calico-typha",
                [endpoint("10.1.0.9", "node-a")],
                port=9093,
                port_name="metrics",
            ),
            # Another service's slice: left out by the label selector.
            endpoint_slice("other", "not-typha", [endpoint("10.1.0.8", "node-a")]),
        ]
        for body in slices:
            await kube.create(path, body)
        cfg = KubeConfig.load(kube_apiserver.kubeconfig_path)

        local = {"10.1.0.1:5473", "[fd00::5]:5473"}
        remote = {"10.1.0.2:5473", "10.1.0.4:5473"}
        sync_addrs = await trio.to_thread.run_sync(
            lambda: discover_typha("calico-typha", ns, "node-a", kubeconfig=cfg)
        )
        async_addrs = await discover_typha_async("calico-typha", ns, "node-a", kube_client=kube)
        for addrs in (sync_addrs, async_addrs):
            assert set(addrs[:2]) == local and set(addrs[2:]) == remote
        # From another node, nothing is local (but everything is still there).
        other = await discover_typha_async("calico-typha", ns, "node-z", kubeconfig=cfg)
        assert set(other) == local | remote
        # The port name is overridable: the metrics slice is found by its own name.
        assert await discover_typha_async(
            "calico-typha", ns, "node-a", kube_client=kube, port_name="metrics"
        ) == ["10.1.0.9:9093"]
        # $KUBECONFIG is the default source (what felix_client/cli.py relies on).
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBECONFIG", kube_apiserver.kubeconfig_path)
            env_addrs = await trio.to_thread.run_sync(
                lambda: discover_typha("calico-typha", ns, "node-b")
            )
        assert env_addrs[0] == "10.1.0.2:5473" and set(env_addrs) == local | remote

        # No ready endpoint: "service not ready" (the readiness flip is the control).
        await kube.patch(f"{path}/typha-v4", {"endpoints": [endpoint("10.1.0.1", "node-a", False)]})
        await kube.delete(f"{path}/typha-v6")
        with pytest.raises(ServiceNotReady, match="service not ready"):
            await discover_typha_async("calico-typha", ns, "node-a", kube_client=kube)
        with pytest.raises(ServiceNotReady):
            await trio.to_thread.run_sync(
                lambda: discover_typha("calico-typha", ns, "node-a", kubeconfig=cfg)
            )
        await kube.patch(f"{path}/typha-v4", {"endpoints": [endpoint("10.1.0.1", "node-a", True)]})
        assert await discover_typha_async("calico-typha", ns, "node-a", kube_client=kube) == [
            "10.1.0.1:5473"
        ]


@pytest.mark.k8s
async def test_discovery_errors_are_typed(kube_apiserver: KubeApiServer, tmp_path: Any) -> None:
    # RBAC: a user with no permissions is refused (the admin above is the control).
    cert, key = kube_apiserver.issue_client_cert("nobody", groups=["typha-test-nobody"])
    path = kube_apiserver.write_kubeconfig(tmp_path / "nobody", cert, key, "nobody")
    with pytest.raises(DiscoveryError, match="forbidden"):
        await discover_typha_async("calico-typha", "kube-system", "n", kubeconfig=path)
    with pytest.raises(DiscoveryError, match="forbidden"):
        await trio.to_thread.run_sync(
            lambda: discover_typha("calico-typha", "kube-system", "n", kubeconfig=path)
        )
    # Unreachable apiserver.
    dead = KubeConfig(server="http://127.0.0.1:9")
    with pytest.raises(DiscoveryError, match="ConnectError"):
        await discover_typha_async("calico-typha", "kube-system", "n", kubeconfig=dead)


@pytest.mark.k8s
async def test_client_connects_to_a_discovered_typha(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ds = MemoryDatastore({"/calico/v1/config/DiscoveredVia": "endpointslice"})
    async with namespace(kube) as ns, run_typha(ds) as typha, trio.open_nursery() as nursery:
        # EndpointSlices refuse loopback addresses, and this test may only talk to loopback: the
        # slices carry TEST-NET addresses that the client's address source maps onto loopback.
        to_loopback = {"192.0.2.10": "127.0.0.1", "192.0.2.11": "127.0.0.2"}
        await kube.create(
            endpoint_slices_path(ns),
            endpoint_slice(
                "typha", "calico-typha", [endpoint("192.0.2.10", "node-a")], port=typha.port
            ),
        )
        # A dead replica on the client's own node comes first; the client moves on to the
        # live one (what Felix does when its local Typha is gone).
        await kube.create(
            endpoint_slices_path(ns),
            endpoint_slice("dead", "calico-typha", [endpoint("192.0.2.11", "node-b")], port=9),
        )
        cfg = KubeConfig.load(kube_apiserver.kubeconfig_path)
        http = httpx.Client(**cfg.httpx_kwargs(), trust_env=False)
        discovered: list[list[str]] = []

        def addresses() -> list[str]:
            found = discover_typha("calico-typha", ns, "node-b", http_client=http)
            discovered.append(found)
            out = []
            for addr in found:
                ip, _, port = addr.rpartition(":")
                out.append(f"{to_loopback[ip]}:{port}")
            return out

        client = SyncClient(addresses, "node-b", "felix", backoff_base=0.01)
        nursery.start_soon(client.run)
        try:
            with trio.fail_after(20):
                await client.in_sync.wait()
        finally:
            http.close()
        assert client.state == {"/calico/v1/config/DiscoveredVia": "endpointslice"}
        assert client.connected_to == typha.address
        assert discovered[0] == ["192.0.2.11:9", f"192.0.2.10:{typha.port}"]  # local first
        nursery.cancel_scope.cancel()
