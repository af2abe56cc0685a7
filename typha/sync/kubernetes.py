"""The Kubernetes datastore (KDD): one list+watch per resource type, shared by all syncer views.

Typha's libcalico-go syncers run one watcher per resource type *per syncer* (≈20 for felix,
plus those of the other three). Here each resource type is listed and watched exactly once and
the cache routes the converted keys to the four views, so a replica holds
``len(KDD_RESOURCES)`` = 25 watches on the apiserver whatever the number of clients.

Algorithm (docs/kubernetes.md):

1. ``ResyncStarted()`` (unscoped) once the apiserver first answers; every type is listed
   (paginated) and emitted as ``Updates(scope=<type>, revision=None)``; ``ResyncFinished()``
   once *all* types have listed (a type whose CRD is not installed counts as listed-empty).
2. Each type then watches from its list's resourceVersion with bookmarks; a bookmark moves the
   resume resourceVersion on; a watch that ends (server timeout, broken stream, idle) is
   re-opened from the last resourceVersion.
3. 410 Gone / "too old resource version" (HTTP or an ERROR event), an expired continue token
   or repeated fruitless watches → relist *that type only* as a scoped resync:
   ``ResyncStarted(scope)`` … ``Updates(scope)`` … ``ResyncFinished(scope)``; the cache
   deletes that scope's keys the relist did not produce. Relists of one type are at least
   ``min_relist_interval`` apart.
4. Apiserver unreachable (a request cannot be made, or 5xx) → ``ConnectionStatus(False)``,
   exponential backoff with jitter per type, and on return ``ConnectionStatus(True)`` and each
   watch resumes from its last resourceVersion (a relist only if that has expired).
5. A type that is not served (404 — CRD not installed, or deleted) is empty: its keys are
   deleted (scoped resync with no items) and the list is retried every
   ``missing_retry_secs`` (30 s; Typha waits 30 min).

Every change goes through the converter (``typha.sync.convert.k8s_to_updates``), the churn
filter (``typha.sync.churn``: a change whose converted output is unchanged is dropped and
counted by reason) and a per-type :class:`~typha.sync.base.ResourceExpander` keyed by
``namespace/name`` (an update that stops producing a key deletes it; DELETED deletes all the
object produced). Invalid objects are logged, counted in
``typha_datastore_invalid_values_total`` and treated as deleted.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from typha import jsonlimit
from typha.k8s.client import (
    KubeApiError,
    KubeClient,
    KubeUnavailable,
    ResourceExpired,
    ResourceNotFound,
)
from typha.k8s.kubeconfig import KubeConfig
from typha.sync.base import (
    ConnectionStatus,
    EventSink,
    ResourceExpander,
    ResyncFinished,
    ResyncStarted,
    Update,
    Updates,
    retry_delay,
    short_repr,
)
from typha.sync.churn import ChurnFilter
from typha.sync.convert import InvalidResource, k8s_to_updates
from typha.sync.metrics import datastore_invalid_values

log = structlog.get_logger(__name__)

CALICO_CRD_GROUP = "crd.projectcalico.org"

# Yield to the scheduler every this many converted objects (a 500-item page or a large watch
# batch must not block the fan-out for its whole conversion).
_CHECKPOINT_EVERY = 200
# Watches that end this many times in a row without delivering anything → relist.
_MAX_FRUITLESS_WATCHES = 5


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One watched collection."""

    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = False

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def scope(self) -> str:
        """The cache scope and metric label: ``pods``, ``networkpolicies.networking.k8s.io``,
        ``ippools.crd.projectcalico.org``."""
        return self.plural if not self.group else f"{self.plural}.{self.group}"

    @property
    def path(self) -> str:
        """The cluster-wide collection path (all namespaces)."""
        if not self.group:
            return f"/api/{self.version}/{self.plural}"
        return f"/apis/{self.group}/{self.version}/{self.plural}"

    @property
    def optional(self) -> bool:
        """May be absent (a CRD that is not installed) without being an error."""
        return self.group == CALICO_CRD_GROUP


def _crd(plural: str, kind: str, namespaced: bool = False) -> ResourceType:
    return ResourceType(plural, kind, CALICO_CRD_GROUP, "v1", namespaced)


KDD_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("pods", "Pod", namespaced=True),
    ResourceType("namespaces", "Namespace"),
    ResourceType("serviceaccounts", "ServiceAccount", namespaced=True),
    ResourceType("nodes", "Node"),
    # Passed through to Felix as Calico Typha does on Kubernetes.
    ResourceType("services", "Service", namespaced=True),
    ResourceType("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True),
    ResourceType("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1", True),
    _crd("globalnetworkpolicies", "GlobalNetworkPolicy"),
    _crd("networkpolicies", "NetworkPolicy", True),
    _crd("tiers", "Tier"),
    _crd("ippools", "IPPool"),
    _crd("hostendpoints", "HostEndpoint"),
    _crd("felixconfigurations", "FelixConfiguration"),
    _crd("bgpconfigurations", "BGPConfiguration"),
    _crd("bgppeers", "BGPPeer"),
    _crd("ipamblocks", "IPAMBlock"),
    _crd("blockaffinities", "BlockAffinity"),
    _crd("clusterinformations", "ClusterInformation"),
    _crd("networksets", "NetworkSet", True),
    _crd("globalnetworksets", "GlobalNetworkSet"),
    # Also synced by Calico Typha: staged policies (felix), BGP filters (bgp), node status
    # requests (node-status).
    _crd("stagednetworkpolicies", "StagedNetworkPolicy", True),
    _crd("stagedglobalnetworkpolicies", "StagedGlobalNetworkPolicy"),
    _crd("stagedkubernetesnetworkpolicies", "StagedKubernetesNetworkPolicy", True),
    _crd("bgpfilters", "BGPFilter"),
    _crd("caliconodestatuses", "CalicoNodeStatus"),
)


def source_id(obj: dict[str, Any]) -> str:
    """``namespace/name`` (``name`` for cluster-scoped objects): the expander's source key."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ""
    ns = meta.get("namespace") or ""
    name = meta.get("name") or ""
    return f"{ns}/{name}" if ns else str(name)


class _Relist(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _TypeState:
    rt: ResourceType
    churn: ChurnFilter
    expander: ResourceExpander = field(default_factory=ResourceExpander)
    resource_version: str | None = None
    listed_once: bool = False  # completed a list (or found the type missing) at least once
    emitted: bool = False  # emitted updates at least once (later lists must be scoped)
    last_list_at: float | None = None
    failures: int = 0
    fruitless: int = 0


class KubernetesDatastore:
    """The Kubernetes :class:`~typha.sync.base.Datastore` (``DatastoreType = kubernetes``).

    Diagnostics (per scope): ``lists`` (completed lists), ``relists`` (scoped relists by
    ``scope``), ``expired`` (410s seen), ``watches_started``, ``watch_events``,
    ``resource_versions`` (resume points), ``missing`` (types not served), plus
    ``invalid_values`` and ``initial_sync_secs``. ``skipped_by_reason()`` sums the churn
    filters' counts.
    """

    name = "kubernetes"

    def __init__(
        self,
        config: KubeConfig | None = None,
        *,
        client_factory: Callable[[], KubeClient] | None = None,
        resources: Sequence[ResourceType] = KDD_RESOURCES,
        page_size: int = 500,
        batch_size: int = 1000,
        watch_timeout_secs: int = 300,
        watch_idle_timeout_secs: float | None = None,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        missing_retry_secs: float = 30.0,
        min_relist_interval: float = 0.5,
        interface_prefix: str | None = None,
        convert: Callable[..., list[Update]] | None = None,
    ):
        """``convert`` replaces ``k8s_to_updates`` (fault injection in tests)."""
        if config is None and client_factory is None:
            config = KubeConfig.load()
        self.config = config
        self._client_factory = client_factory
        self.resources = tuple(resources)
        self.page_size = page_size
        self.batch_size = batch_size
        self.watch_timeout_secs = watch_timeout_secs
        self.watch_idle_timeout_secs = watch_idle_timeout_secs
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.missing_retry_secs = missing_retry_secs
        self.min_relist_interval = min_relist_interval
        self._convert = convert or k8s_to_updates
        self._convert_kwargs: dict[str, Any] = {}
        if interface_prefix:
            self._convert_kwargs["interface_prefix"] = interface_prefix

        self.states: dict[str, _TypeState] = {
            rt.scope: _TypeState(rt, ChurnFilter(rt.scope)) for rt in self.resources
        }
        self.lists: collections.Counter[str] = collections.Counter()
        self.relists: collections.Counter[str] = collections.Counter()
        self.expired: collections.Counter[str] = collections.Counter()
        self.watches_started: collections.Counter[str] = collections.Counter()
        self.watch_events: collections.Counter[str] = collections.Counter()
        self.missing: set[str] = set()
        self.invalid_values = 0
        self.initial_sync_secs: float | None = None
        self.in_sync = trio.Event()
        self._connected: bool | None = None
        self._initial_started = False
        self._initial_pending: set[str] = set()
        self._t0 = 0.0

    @classmethod
    def from_environment(cls, **kwargs: Any) -> KubernetesDatastore:
        """The Kubernetes client configuration comes from the environment like libcalico-go's
        (``KUBECONFIG``, else in-cluster): Typha has no kubeconfig parameter of its own
        (docs/kubernetes.md)."""
        return cls(KubeConfig.load(), **kwargs)

    def make_client(self) -> KubeClient:
        if self._client_factory is not None:
            return self._client_factory()
        assert self.config is not None
        # One connection per watch plus room for lists.
        return KubeClient(self.config, max_connections=len(self.resources) + 16)

    @property
    def resource_versions(self) -> dict[str, str | None]:
        return {scope: st.resource_version for scope, st in self.states.items()}

    def skipped_by_reason(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for st in self.states.values():
            total.update(st.churn.skipped)
        return dict(total)

    # --- main loop -----------------------------------------------------------------------------

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None:
        """List and watch every type until cancelled; never returns on apiserver errors."""
        if start_revision is not None:
            # resourceVersions are per type and opaque: there is no single revision to resume
            # from, so a warm start still lists (the cache dedupes what it already has).
            log.info("kubernetes datastore ignores start_revision; listing", rev=start_revision)
        # Every run starts from nothing (a new sink knows nothing of an earlier run's keys).
        self.states = {rt.scope: _TypeState(rt, ChurnFilter(rt.scope)) for rt in self.resources}
        self._initial_started = False
        self._connected = None
        if self.in_sync.is_set():
            self.in_sync = trio.Event()
        self._initial_pending = {rt.scope for rt in self.resources}
        self._t0 = trio.current_time()
        async with self.make_client() as client, trio.open_nursery() as nursery:
            for rt in self.resources:
                nursery.start_soon(self._run_type, client, sink, self.states[rt.scope])

    async def _run_type(self, client: KubeClient, sink: EventSink, st: _TypeState) -> None:
        rt = st.rt
        relist: str | None = "initial"
        while True:
            try:
                if relist is not None:
                    await self._list(client, sink, st, relist)
                    relist = None
                await self._watch(client, sink, st)
            except _Relist as exc:
                relist = exc.reason
            except ResourceExpired as exc:
                self.expired[rt.scope] += 1
                log.info("resourceVersion expired; relisting", scope=rt.scope, detail=str(exc))
                relist = "expired"
            except ResourceNotFound as exc:
                await self._not_served(sink, st, str(exc))
                await trio.sleep(self.missing_retry_secs)
                relist = "type-appeared"
            except KubeUnavailable as exc:
                st.failures += 1
                delay = self._backoff(st.failures)
                if not exc.throttled:
                    await self._set_connected(sink, False, f"{rt.scope}: {exc}")
                log.info(
                    "apiserver request failed; retrying",
                    scope=rt.scope,
                    error=str(exc),
                    retry_in=round(delay, 3),
                )
                await trio.sleep(delay)
            except KubeApiError as exc:
                # Forbidden (RBAC), a bad request...: the apiserver answered, so it is up;
                # keep retrying (slowly) and make it loud.
                st.failures += 1
                await self._set_connected(sink, True)
                delay = max(self._backoff(st.failures), 1.0)
                log.error(
                    "apiserver refused request; retrying",
                    scope=rt.scope,
                    status=exc.status,
                    error=str(exc),
                    retry_in=round(delay, 3),
                )
                await trio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return retry_delay(attempt, self.backoff_base, self.backoff_cap)

    async def _set_connected(self, sink: EventSink, connected: bool, detail: str = "") -> None:
        if connected != self._connected:
            self._connected = connected
            log.info("apiserver connection", connected=connected, detail=detail)
            await sink.send(ConnectionStatus(connected, detail))

    async def _start_initial(self, sink: EventSink) -> None:
        if not self._initial_started:
            self._initial_started = True
            await sink.send(ResyncStarted("initial"))

    async def _type_listed(self, sink: EventSink, st: _TypeState) -> None:
        st.listed_once = True
        if st.rt.scope in self._initial_pending:
            self._initial_pending.discard(st.rt.scope)
            if not self._initial_pending:
                await self._start_initial(sink)
                await sink.send(ResyncFinished())
                self.initial_sync_secs = trio.current_time() - self._t0
                self.in_sync.set()
                log.info(
                    "kubernetes initial sync finished",
                    seconds=round(self.initial_sync_secs, 3),
                    missing=sorted(self.missing),
                )

    # --- list ----------------------------------------------------------------------------------

    async def _list(self, client: KubeClient, sink: EventSink, st: _TypeState, reason: str) -> None:
        rt = st.rt
        if st.last_list_at is not None:
            await trio.sleep_until(st.last_list_at + self.min_relist_interval)
        st.last_list_at = trio.current_time()
        # The very first list of a type that has emitted nothing is part of the unscoped
        # initial resync; every later list is a scoped resync of that type.
        scoped = st.emitted or not self._initial_pending
        started = False
        listed: set[str] = set()
        batch: list[Update] = []
        rv = ""
        items = 0
        t0 = trio.current_time()
        pages = client.list_pages(rt.path, page_size=self.page_size)
        async with contextlib.aclosing(pages):
            async for page in pages:
                if not started:
                    started = True
                    await self._set_connected(sink, True)
                    await self._start_initial(sink)
                    if scoped:
                        self.relists[rt.scope] += 1
                        await sink.send(ResyncStarted(reason, scope=rt.scope))
                    st.emitted = True
                rv = rv or page.resource_version
                for i, obj in enumerate(page.items):
                    source = source_id(obj)
                    listed.add(source)
                    batch.extend(self._on_object(st, source, obj, force=True))
                    if len(batch) >= self.batch_size:
                        await sink.send(Updates(batch, None, rt.scope))
                        batch = []
                    if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                        await trio.lowlevel.checkpoint()
                items += len(page.items)
        if batch:
            await sink.send(Updates(batch, None, rt.scope))
        st.expander.forget_except(listed)
        st.churn.forget_except(listed)
        st.resource_version = rv
        st.failures = 0
        st.fruitless = 0
        self.lists[rt.scope] += 1
        if rt.scope in self.missing:
            self.missing.discard(rt.scope)
            log.info("resource type is served again", scope=rt.scope)
        if scoped:
            await sink.send(ResyncFinished(None, scope=rt.scope))
        log.debug(
            "listed",
            scope=rt.scope,
            reason=reason,
            items=items,
            resource_version=rv,
            seconds=round(trio.current_time() - t0, 3),
        )
        await self._type_listed(sink, st)

    async def _not_served(self, sink: EventSink, st: _TypeState, detail: str) -> None:
        """404 for the collection: the type (CRD) is not installed — it has no objects."""
        rt = st.rt
        await self._set_connected(sink, True)
        if rt.scope not in self.missing:
            level = log.info if rt.optional else log.warning
            level(
                "resource type not served; treating as empty",
                scope=rt.scope,
                retry_secs=self.missing_retry_secs,
                detail=detail,
            )
            self.missing.add(rt.scope)
        if st.expander.sources():
            # It was there before (CRD deleted): delete everything it produced.
            self.relists[rt.scope] += 1
            await sink.send(ResyncStarted("type-gone", scope=rt.scope))
            await sink.send(ResyncFinished(None, scope=rt.scope))
            st.expander.forget_except(set())
        st.churn.clear()
        st.resource_version = None
        await self._type_listed(sink, st)

    # --- watch ---------------------------------------------------------------------------------

    async def _watch(self, client: KubeClient, sink: EventSink, st: _TypeState) -> None:
        """One watch from the resume resourceVersion until the stream ends (returns) or fails
        (raises)."""
        rt = st.rt
        delivered = 0
        opened_at = trio.current_time()
        async with client.open_watch(
            rt.path,
            st.resource_version,
            timeout_seconds=self.watch_timeout_secs,
            idle_timeout=self.watch_idle_timeout_secs,
        ) as stream:
            self.watches_started[rt.scope] += 1
            st.failures = 0
            await self._set_connected(sink, True)
            while (events := await stream.next_batch()) is not None:
                delivered += len(events)
                self.watch_events[rt.scope] += len(events)
                await self._on_events(sink, st, events)
        lasted = trio.current_time() - opened_at
        if delivered or lasted > min(5.0, self.watch_timeout_secs / 2):
            st.fruitless = 0
        else:
            st.fruitless += 1
            if st.fruitless >= _MAX_FRUITLESS_WATCHES:
                st.fruitless = 0
                raise _Relist("watch-errors")
            await trio.sleep(self._backoff(st.fruitless))
        log.debug(
            "watch ended; re-watching",
            scope=rt.scope,
            reason=stream.end_reason,
            events=delivered,
            resource_version=st.resource_version,
        )

    async def _on_events(self, sink: EventSink, st: _TypeState, events: list[Any]) -> None:
        out: list[Update] = []
        for i, (etype, obj) in enumerate(events):
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if etype == "BOOKMARK":
                if rv:
                    st.resource_version = rv
                continue
            source = source_id(obj)
            if etype == "DELETED":
                gone = st.expander.delete(source)
                st.churn.deleted(source, changed_output=bool(gone))
                out.extend(_stamped(gone, _revision(st.rt, rv)))
            elif etype in ("ADDED", "MODIFIED"):
                out.extend(self._on_object(st, source, obj, force=False))
            else:
                log.warning("unknown watch event type", scope=st.rt.scope, type=etype)
            if rv:
                st.resource_version = rv
            if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()
        if out:
            for start in range(0, len(out), self.batch_size):
                await sink.send(Updates(out[start : start + self.batch_size], None, st.rt.scope))

    # --- conversion ----------------------------------------------------------------------------

    def _on_object(
        self, st: _TypeState, source: str, obj: dict[str, Any], *, force: bool
    ) -> list[Update]:
        """The guard for one object: *any* exception while converting it (or fingerprinting
        it for the churn filter) makes that object invalid — its keys deleted for clients —
        and never stops the sync of the others."""
        rt = st.rt
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        produced: list[Update] | None
        try:
            if jsonlimit.TOO_DEEP_KEY in obj:
                raise jsonlimit.TooDeep(jsonlimit.MAX_DEPTH)
            obj.setdefault("kind", rt.kind)
            obj.setdefault("apiVersion", rt.api_version)
            produced = self._convert(obj, **self._convert_kwargs)
        except (InvalidResource, jsonlimit.TooDeep) as exc:
            self._invalid(rt, source, obj, str(exc))
            produced = None
        except RecursionError:
            # Deeper than the bound but within the C decoder's reach (~100-1,000 levels), a
            # converter that copies the object recurses too deep: an ordinary invalid object,
            # not a converter bug worth a traceback.
            self._invalid(rt, source, obj, f"nested deeper than {jsonlimit.MAX_DEPTH} levels")
            produced = None
        except Exception as exc:
            # A converter bug must not stop the sync of everything else; make it loud (one
            # record, with the traceback).
            self._invalid(rt, source, obj, f"converter error: {short_repr(exc)}", exc)
            produced = None
        try:
            emit = st.churn.check(source, obj, produced, force=force)
        except Exception as exc:
            # Only a pathological object fails here (too deep to fingerprint): invalid too.
            if produced is not None:
                self._invalid(rt, source, obj, f"cannot fingerprint: {short_repr(exc)}", exc)
            st.churn.forget(source)
            produced, emit = None, True
        if not emit:
            return []
        return _stamped(st.expander.expand(source, produced or []), _revision(st.rt, rv))

    def _invalid(
        self,
        rt: ResourceType,
        source: str,
        obj: dict[str, Any],
        reason: str,
        exc_info: BaseException | None = None,
    ) -> None:
        self.invalid_values += 1
        datastore_invalid_values.inc()
        meta = obj.get("metadata")
        log.warning(
            "invalid resource; treating as deleted",
            scope=rt.scope,
            source=source,
            resource_version=meta.get("resourceVersion") if isinstance(meta, dict) else None,
            reason=reason,
            exc_info=exc_info,
        )


def _revision(rt: ResourceType, resource_version: Any) -> Any:
    """The revision Calico reports for keys made from this object: a profile is made from a
    namespace or a service account and libcalico-go gives it ``<namespace rv>/<account rv>``
    with the other half empty."""
    if not resource_version:
        return resource_version
    if rt.kind == "Namespace":
        return f"{resource_version}/"
    if rt.kind == "ServiceAccount":
        return f"/{resource_version}"
    return resource_version


def _stamped(updates: list[Update], resource_version: Any) -> list[Update]:
    """The updates with the resourceVersion of the object that produced them (Calico's
    protocol sends it with each KV, as libcalico-go's Kubernetes backend reports it)."""
    if not resource_version or not updates:
        return updates
    rv = str(resource_version)
    return [Update(u.key, u.value, rv) for u in updates]
