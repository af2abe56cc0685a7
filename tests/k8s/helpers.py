"""Helpers for the tests against a real kube-apiserver: object bodies, paths, waits, the
client fixture ``kube`` (registered by the conftest of each directory that uses it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

from felix_client.sync_client import SyncClient
from tests.peers.kube_apiserver import KubeApiServer
from typha.k8s.client import (
    KubeClient,
    KubeError,
    resource_path,
)
from typha.k8s.kubeconfig import KubeConfig
from typha.model import keys
from typha.protocol import KVs
from typha.sync.convert import k8s_to_updates

CALICO = "crd.projectcalico.org/v1"


# --- helpers ------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
    assert pred(), f"timed out after {timeout}s waiting for {what or pred}"


def pod_body(
    ns: str,
    name: str,
    node: str | None,
    *,
    labels: dict[str, str] | None = None,
    ip: str | None = None,
    host_network: bool = False,
    service_account: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}}
    if ip:
        # What Calico's CNI plugin writes at network set-up.
        meta["annotations"] = {"cni.projectcalico.org/podIP": f"{ip}/32"}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"name": "http", "containerPort": 80}],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pods_path(ns: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path("v1", "pods", namespace=ns, name=name, subresource=sub)


def calico(plural: str, name: str | None = None, ns: str | None = None) -> str:
    return resource_path(CALICO, plural, namespace=ns, name=name)


def crd_body(kind: str, name: str, spec: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": CALICO, "kind": kind, "metadata": meta, "spec": spec}


def wep_key(node: str, ns: str, pod: str) -> str:
    return keys.workload_endpoint_key(node, "k8s", f"{ns}/{pod}", "eth0")


def expected_from(objs: list[dict[str, Any]], syncer: str) -> dict[str, Any]:
    """What a client of ``syncer`` must hold for these objects (the converters' output)."""
    out: dict[str, Any] = {}
    for obj in objs:
        for upd in k8s_to_updates(obj):
            if upd.value is not None and syncer in keys.syncer_types_for(upd.key):
                out[upd.key] = upd.value
    return out


def kvs_counter(client: SyncClient) -> list[int]:
    """Count KVs *frames* and KVs received by ``client`` from now on: [frames, kvs]."""
    counts = [0, 0]

    def on_kvs(msg: KVs) -> None:
        counts[0] += 1
        counts[1] += len(msg.kvs)

    client.on_kvs = on_kvs
    return counts


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@contextlib.asynccontextmanager
async def cleanup(kube: KubeClient) -> AsyncIterator[list[str]]:
    """Paths appended to the yielded list are deleted (grace 0) when the block exits."""
    paths: list[str] = []
    try:
        yield paths
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for path in reversed(paths):
                with contextlib.suppress(KubeError):
                    await kube.delete(path, grace_period_seconds=0)


def kube_config(server: KubeApiServer) -> KubeConfig:
    return KubeConfig.load(server.kubeconfig_path)


@pytest.fixture
async def kube(kube_apiserver: KubeApiServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(kube_config(kube_apiserver)) as client:
        yield client
