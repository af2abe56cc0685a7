"""Typha discovery from the Kubernetes API, as Felix does it (docs/kubernetes.md, "Discovery").

List the EndpointSlices labelled ``kubernetes.io/service-name=<service>`` in the namespace;
in each slice that has the port named ``calico-typha`` (overridable), take every address of
every endpoint whose ``conditions.ready`` is not false, as ``ip:port`` (``[ip]:port`` for
IPv6). Endpoints on the client's own node (``nodeName``) come first, then the rest; each group
is shuffled. No endpoint ⇒ :class:`ServiceNotReady` ("service not ready").

``discover_typha`` is synchronous (a sync httpx client; felix_client/cli.py calls it before
each connection attempt); ``discover_typha_async`` uses a :class:`~typha.k8s.client.
KubeClient`. Both take an explicit client or a kubeconfig (path or
:class:`~typha.k8s.kubeconfig.KubeConfig`); with neither, the standard loading order
applies (``KUBECONFIG``, in-cluster, ``~/.kube/config``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from typha.k8s.client import KubeClient, KubeError, error_from_status
from typha.k8s.kubeconfig import KubeConfig

DEFAULT_PORT_NAME = "calico-typha"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class DiscoveryError(Exception):
    """Typha discovery failed (the apiserver could not be asked, or refused)."""


class ServiceNotReady(DiscoveryError):
    """The service has no ready Typha endpoint."""


@dataclass(frozen=True, slots=True)
class TyphaEndpoint:
    addr: str  # host:port, ready to dial
    ip: str
    port: int
    node_name: str | None


def endpoint_slices_path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{quote(namespace, safe='')}/endpointslices"


def join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def typha_endpoints(
    slices: Iterable[Mapping[str, Any]],
    port_name: str = DEFAULT_PORT_NAME,
    *,
    ready_only: bool = True,
) -> list[TyphaEndpoint]:
    """Every address in the slices that carry ``port_name`` (ready ones, unless
    ``ready_only=False``), in slice order."""
    out: list[TyphaEndpoint] = []
    for eps in slices:
        port = next(
            (
                p.get("port")
                for p in eps.get("ports") or []
                if p.get("name") == port_name and p.get("port")
            ),
            None,
        )
        if not port:
            continue
        for endpoint in eps.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            if ready_only and ready is False:
                continue
            node = endpoint.get("nodeName")
            for ip in endpoint.get("addresses") or []:
                out.append(TyphaEndpoint(join_host_port(ip, int(port)), ip, int(port), node))
    return out


def order_for_node(
    endpoints: Iterable[TyphaEndpoint], node_name: str | None, rng: random.Random | None = None
) -> list[str]:
    """Local-node endpoints first, then the rest; each group shuffled."""
    shuffle = (rng or random).shuffle
    local = [e.addr for e in endpoints if node_name and e.node_name == node_name]
    remote = [e.addr for e in endpoints if not (node_name and e.node_name == node_name)]
    shuffle(local)
    shuffle(remote)
    return local + remote


def addresses_from_slices(
    slices: Iterable[Mapping[str, Any]],
    node_name: str | None,
    port_name: str = DEFAULT_PORT_NAME,
    *,
    service: str = "",
    rng: random.Random | None = None,
) -> list[str]:
    """The ordered Typha addresses, or :class:`ServiceNotReady`."""
    addrs = order_for_node(typha_endpoints(slices, port_name), node_name, rng)
    if not addrs:
        raise ServiceNotReady(
            f"service not ready: no ready endpoint with port {port_name!r}"
            + (f" in service {service!r}" if service else "")
        )
    return addrs


def _params(service_name: str) -> dict[str, str]:
    return {"labelSelector": f"{SERVICE_NAME_LABEL}={service_name}"}


def discover_typha(
    service_name: str,
    namespace: str,
    node_name: str | None,
    *,
    http_client: httpx.Client | None = None,
    kubeconfig: KubeConfig | str | None = None,
    port_name: str = DEFAULT_PORT_NAME,
    timeout: float = 10.0,
) -> list[str]:
    """Typha addresses for ``node_name`` (blocking; see module doc).

    ``http_client``: an ``httpx.Client`` already pointed at the apiserver (``base_url`` and
    credentials); otherwise one is built from ``kubeconfig`` for this call.
    """
    path = endpoint_slices_path(namespace)
    what = f"list EndpointSlices of {namespace}/{service_name}"
    try:
        if http_client is not None:
            resp = http_client.get(path, params=_params(service_name))
        else:
            cfg = kubeconfig if isinstance(kubeconfig, KubeConfig) else KubeConfig.load(kubeconfig)
            with httpx.Client(
                **cfg.httpx_kwargs(),
                timeout=timeout,
                trust_env=False,
                headers={"Accept": "application/json"},
            ) as client:
                resp = client.get(path, params=_params(service_name))
                resp.read()
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"{what}: {type(exc).__name__}: {exc}") from None
    if not resp.is_success:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = resp.json()
        err = error_from_status(
            resp.status_code, body if isinstance(body, dict) else None, resp.text
        )
        raise DiscoveryError(f"{what}: {err}")
    return addresses_from_slices(
        resp.json().get("items") or [], node_name, port_name, service=service_name
    )


async def list_endpoint_slices(
    client: KubeClient, service_name: str, namespace: str
) -> list[dict[str, Any]]:
    """The EndpointSlices of a service (all pages)."""
    result = await client.list(endpoint_slices_path(namespace), _params(service_name))
    return result.items


async def discover_typha_async(
    service_name: str,
    namespace: str,
    node_name: str | None,
    *,
    kube_client: KubeClient | None = None,
    kubeconfig: KubeConfig | str | None = None,
    port_name: str = DEFAULT_PORT_NAME,
) -> list[str]:
    """Async :func:`discover_typha` on a :class:`KubeClient` (built for this call if absent)."""
    try:
        if kube_client is not None:
            slices = await list_endpoint_slices(kube_client, service_name, namespace)
        else:
            cfg = kubeconfig if isinstance(kubeconfig, KubeConfig) else KubeConfig.load(kubeconfig)
            async with KubeClient(cfg) as client:
                slices = await list_endpoint_slices(client, service_name, namespace)
    except KubeError as exc:
        raise DiscoveryError(f"list EndpointSlices of {namespace}/{service_name}: {exc}") from None
    return addresses_from_slices(slices, node_name, port_name, service=service_name)
