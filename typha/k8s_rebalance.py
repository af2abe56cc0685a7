"""Connection rebalancing across Typha replicas (``ConnectionRebalancingMode=kubernetes``;
docs/kubernetes.md, "Rebalancing"; Typha's k8s/rebalance.go).

Every ``K8sServicePollIntervalSecs`` (±10%) the poller counts the unique IPs in the
EndpointSlices of ``K8sServiceName`` (in ``K8sNamespace``) that carry the port
``K8sPortName`` — every address, ready or not, as Typha does — and the nodes (the felix view's
``/calico/resources/v3/projectcalico.org/nodes/`` keys, like Typha's NodeCounter: only once the
cache has synced), and sets the server's connection limit to
:func:`connection_limit`. Any lookup error ⇒ the upper limit. The governor then sheds one
connection per ``ConnectionDropIntervalSecs`` while above the limit.

Our addition: the server's ``redirect_addrs`` are set to the *other* replicas' ready
``ip:port``, so that a shed client's Goodbye suggests where to go instead of letting it land on
the same replica again.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from typha.k8s.client import KubeClient, KubeError
from typha.k8s.discovery import list_endpoint_slices, typha_endpoints
from typha.k8s.kubeconfig import KubeConfig
from typha.model.keys import ALL_SYNCER_TYPES, SyncerType

log = structlog.get_logger(__name__)

NODE_KEY_PREFIX = "/calico/resources/v3/projectcalico.org/nodes/"
NUM_SYNCER_TYPES = len(ALL_SYNCER_TYPES)
HEADROOM_PERCENT = 20
LOOKUP_TIMEOUT_SECS = 30.0


def connection_limit_with_reason(
    nodes: int,
    typhas: int,
    syncer_types: int = NUM_SYNCER_TYPES,
    lower: int = 400,
    upper: int = 10000,
) -> tuple[int, str]:
    """Typha's ``CalculateMaxConnLimit``, integer math included, with its reason string."""
    if typhas <= 1:
        return upper, "lone typha"
    target, reason = lower, "configured lower limit"
    # One Typha fewer than there are (tolerates one down during a roll), +20% headroom.
    candidate = syncer_types * (1 + nodes * (100 + HEADROOM_PERCENT) // (typhas - 1) // 100)
    if candidate > target:
        target, reason = candidate, "fraction+20%"
    if target > upper:
        target, reason = upper, "configured upper limit"
    return target, reason


def connection_limit(
    nodes: int,
    typhas: int,
    syncer_types: int = NUM_SYNCER_TYPES,
    lower: int = 400,
    upper: int = 10000,
) -> int:
    """The per-replica connection limit: lone Typha (≤1) ⇒ ``upper``; else
    ``syncer_types * (1 + nodes * 1.2 / (typhas - 1))`` clamped to ``[lower, upper]``.

    2000 nodes, 20 Typhas ⇒ 508; 200 nodes, 3 Typhas ⇒ 484.
    """
    return connection_limit_with_reason(nodes, typhas, syncer_types, lower, upper)[0]


class NodeCountUnavailable(Exception):
    """The cache has not synced yet, so the node count is not known."""


def count_nodes(feed: Any) -> int:
    """Nodes in the felix view (Typha's NodeCounter: an error before the first sync)."""
    if not getattr(feed, "synced_once", False):
        raise NodeCountUnavailable("cache not in sync yet")
    view = feed.views.get(SyncerType.FELIX) or next(iter(feed.views.values()))
    return sum(1 for key in view.state if key.startswith(NODE_KEY_PREFIX))


@dataclass(frozen=True, slots=True)
class TyphaReplicas:
    """What the service's EndpointSlices say about the replicas."""

    count: int  # unique IPs, ready or not (what the formula uses)
    ready_addrs: tuple[str, ...]  # ip:port of ready endpoints


def typha_replicas(slices: Iterable[Mapping[str, Any]], port_name: str) -> TyphaReplicas:
    slices = list(slices)
    everyone = typha_endpoints(slices, port_name, ready_only=False)
    ready = typha_endpoints(slices, port_name, ready_only=True)
    return TyphaReplicas(len({e.ip for e in everyone}), tuple(e.addr for e in ready))


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """The rebalancer's parameters (``typha.app`` builds them from the configuration when
    ConnectionRebalancingMode is ``kubernetes``)."""

    lower_limit: int = 400  # MaxConnectionsLowerLimit
    upper_limit: int = 10000  # MaxConnectionsUpperLimit
    poll_interval: float = 30.0  # K8sServicePollIntervalSecs
    namespace: str = "kube-system"  # K8sNamespace
    service_name: str = "calico-typha"  # K8sServiceName
    port_name: str = "calico-typha"  # K8sPortName
    server_host: str = ""  # ServerHost: one of the ways to recognise our own endpoint
    redirect_addrs: tuple[str, ...] = ()  # RedirectAddrs: used when no other replica is found


class K8sRebalancer:
    """The poll loop. ``server`` needs ``set_connection_limit``, ``redirect_addrs`` and
    ``port``; ``feed`` is the :class:`~typha.cache.feed.CacheFeed` (node count)."""

    def __init__(
        self,
        settings: RebalanceSettings,
        server: Any,
        feed: Any,
        *,
        kube_client: KubeClient | None = None,
        kube_config: KubeConfig | None = None,
        self_addresses: Iterable[str] = (),
        syncer_types: int = NUM_SYNCER_TYPES,
        node_counter: Callable[[], int] | None = None,
        translate: Callable[[str], str] | None = None,
    ):
        """``self_addresses``: this replica's ``ip:port`` as the EndpointSlices show it (also
        recognised: ``$POD_IP``, and ``ServerHost:port``). ``translate`` maps a peer's
        endpoint address to the address clients should be redirected to (NAT; tests)."""
        self.settings = settings
        self.server = server
        self.feed = feed
        self._client = kube_client
        self._kube_config = kube_config
        self.self_addresses = set(self_addresses)
        self.syncer_types = syncer_types
        self._count_nodes = node_counter or (lambda: count_nodes(self.feed))
        self._translate = translate or (lambda addr: addr)
        self.polls = 0
        self.last_limit: int | None = None
        self.last_reason = ""
        self.last_typhas: int | None = None
        self.last_nodes: int | None = None

    def _is_self(self, addr: str) -> bool:
        if addr in self.self_addresses:
            return True
        ip = addr.rsplit(":", 1)[0].strip("[]")
        pod_ip = os.environ.get("POD_IP", "")
        if pod_ip and ip == pod_ip:
            return True
        host = self.settings.server_host
        return bool(host) and addr == f"{host}:{self.server.port}"

    async def poll_once(self, client: KubeClient) -> int:
        """One poll: look up, compute, apply. Returns the limit set."""
        self.polls += 1
        settings = self.settings
        upper = settings.upper_limit
        try:
            with trio.fail_after(LOOKUP_TIMEOUT_SECS):
                slices = await list_endpoint_slices(
                    client, settings.service_name, settings.namespace
                )
            replicas = typha_replicas(slices, settings.port_name)
            nodes = self._count_nodes()
        except (KubeError, NodeCountUnavailable, trio.TooSlowError) as exc:
            limit, reason = upper, "error"
            log.warning("rebalance lookup failed; using the upper limit", error=str(exc))
        else:
            self.last_typhas, self.last_nodes = replicas.count, nodes
            limit, reason = connection_limit_with_reason(
                nodes,
                replicas.count,
                self.syncer_types,
                settings.lower_limit,
                upper,
            )
            others = [self._translate(a) for a in replicas.ready_addrs if not self._is_self(a)]
            self.server.redirect_addrs = others or list(settings.redirect_addrs)
        if limit != self.last_limit:
            log.info(
                "calculated new connection limit",
                typhas=self.last_typhas,
                nodes=self.last_nodes,
                syncer_types=self.syncer_types,
                limit=limit,
                reason=reason,
            )
        self.last_limit, self.last_reason = limit, reason
        self.server.set_connection_limit(limit)
        return limit

    async def run(self) -> None:
        """Poll until cancelled (first poll at once, then every interval ±10%)."""
        interval = self.settings.poll_interval
        if self._client is not None:
            await self._loop(self._client, interval)
            return
        async with KubeClient(self._kube_config or KubeConfig.load()) as client:
            await self._loop(client, interval)

    async def _loop(self, client: KubeClient, interval: float) -> None:
        while True:
            await self.poll_once(client)
            await trio.sleep(interval * random.uniform(0.9, 1.1))


def rebalance_task(
    typha: Any,
    settings: RebalanceSettings,
    *,
    kube_client: KubeClient | None = None,
    kube_config: KubeConfig | None = None,
    self_addresses: Iterable[str] = (),
    translate: Callable[[str], str] | None = None,
) -> Callable[[], Awaitable[None]]:
    """The task ``typha.app.Typha`` appends to its ``extra_tasks`` when
    ``ConnectionRebalancingMode`` is ``kubernetes``."""
    rebalancer = K8sRebalancer(
        settings,
        typha.server,
        typha.feed,
        kube_client=kube_client,
        kube_config=kube_config,
        self_addresses=self_addresses,
        translate=translate,
    )
    return rebalancer.run
