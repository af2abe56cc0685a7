"""`typha serve`: wire config, datastore, cache, server, health, metrics and signals together."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
import trio

from typha import gc_tuning, heap, metrics
from typha.cache import persist
from typha.cache.feed import CacheFeed, CacheSettings
from typha.config import Config, no_effect_settings
from typha.health import HealthAggregator
from typha.http import serve_http
from typha.protocol import SyncStatus
from typha.server.context import ConnectionSettings
from typha.server.gob_codec import snapshot_body, snapshot_body_variant
from typha.server.server import SyncServer
from typha.server.settings import ServerSettings
from typha.sync.base import Datastore
from typha.sync.initialize import ensure_initialized, is_calico_datastore
from typha.sync.synthetic import WithSyntheticKeys
from typha.tls import server_ssl_context

if TYPE_CHECKING:  # both pull in their HTTP client: imported when used
    from typha.k8s_rebalance import RebalanceSettings
    from typha.sync.etcd import EtcdSettings

log = structlog.get_logger(__name__)

# After the first in-sync, how long the full collection and freeze wait (see
# ``_freeze_after_first_sync``).
FREEZE_DELAY_SECS = 0.5
# The cache's gauges and update counters follow updates at most this often (status changes at once).
REPORT_MIN_INTERVAL_SECS = 0.2
# After a warm restart, how long the gob bodies saved with the cache file are kept for the
# snapshots of the clients that reconnect (``_forget_saved_bodies``).
SAVED_BODIES_KEEP_SECS = 60.0


# --- Typed settings, one object per component, built from the parsed configuration ----------


@dataclass(frozen=True, slots=True)
class DatastoreSettings:
    kind: str = "etcdv3"  # DatastoreType, or "memory" (DatastoreInMemory: demo and tests)
    etcd: EtcdSettings | None = None  # with kind "etcdv3"


@dataclass(frozen=True, slots=True)
class ServerTLSSettings:
    """ServerCertFile, ServerKeyFile and CAFile (present only when TLS is on)."""

    cert_file: str
    key_file: str
    ca_file: str


@dataclass(frozen=True, slots=True)
class HealthSettings:
    enabled: bool = False  # HealthEnabled
    host: str = "localhost"  # HealthHost
    port: int = 9098  # HealthPort (0: a random port)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = False  # PrometheusMetricsEnabled
    host: str = ""  # PrometheusMetricsHost
    port: int = 9093  # PrometheusMetricsPort (0: a random port)
    runtime_collectors: bool = True  # PrometheusGoMetricsEnabled (Python's GC and platform)
    process_collectors: bool = True  # PrometheusProcessMetricsEnabled
    cert_file: str = ""  # PrometheusMetricsCertFile
    key_file: str = ""  # PrometheusMetricsKeyFile
    ca_file: str = ""  # PrometheusMetricsCAFile
    client_auth: str = "NoClientCert"  # PrometheusMetricsClientAuth


@dataclass(frozen=True, slots=True)
class PersistSettings:
    path: str = ""  # CacheFilePath ("": no warm restart)
    save_interval: float = 30.0  # CacheSaveIntervalSecs


@dataclass(frozen=True, slots=True)
class TyphaSettings:
    datastore: DatastoreSettings
    cache: CacheSettings
    server: ServerSettings
    tls: ServerTLSSettings | None
    health: HealthSettings
    metrics: MetricsSettings
    persist: PersistSettings
    rebalance: RebalanceSettings | None  # with ConnectionRebalancingMode=kubernetes


def etcd_settings(cfg: Config) -> EtcdSettings:
    from typha.sync.etcd import EtcdSettings
    from typha.sync.etcd_common import EtcdAccess

    # An endpoint without a scheme takes EtcdScheme, as in Typha.
    scheme = cfg.etcd_scheme
    raw = list(cfg.etcd_endpoints) or [cfg.etcd_addr]
    return EtcdSettings(
        endpoints=tuple(e if "://" in e else f"{scheme}://{e}" for e in raw),
        access=EtcdAccess(
            ca_file=cfg.etcd_ca_file or None,
            cert_file=cfg.etcd_cert_file or None,
            key_file=cfg.etcd_key_file or None,
            username=cfg.etcd_username or None,
            password=cfg.etcd_password or None,
        ),
        hang_detection_secs=cfg.etcd_hang_detection_secs,
        api=cfg.etcd_api,
    )


def datastore_settings(cfg: Config) -> DatastoreSettings:
    kind = "memory" if cfg.datastore_in_memory else cfg.datastore_type
    return DatastoreSettings(kind=kind, etcd=etcd_settings(cfg) if kind == "etcdv3" else None)


def cache_settings(cfg: Config) -> CacheSettings:
    return CacheSettings(
        max_batch_size=cfg.snapshot_cache_max_batch_size,
        max_history_secs=cfg.server_max_fall_behind_secs,
        max_history_updates=cfg.history_max_updates,
        tombstone_retention_secs=cfg.tombstone_retention_secs,
    )


def server_settings(cfg: Config) -> ServerSettings:
    return ServerSettings(
        host=cfg.server_host,
        port=cfg.listen_port,
        connection=ConnectionSettings(
            handshake_timeout=cfg.server_handshake_timeout_secs,
            write_timeout=cfg.server_write_timeout_secs,
            ping_interval=cfg.server_ping_interval_secs,
            pong_timeout=cfg.pong_timeout,
            new_client_grace=cfg.server_new_client_fall_behind_grace_period,
        ),
        max_connections=cfg.max_connections_upper_limit,
        connection_drop_interval=cfg.connection_drop_interval_secs,
        shutdown_timeout=cfg.shutdown_timeout_secs,
        shutdown_drop_interval_max=cfg.shutdown_connection_drop_interval_max_secs,
        fanout_interval=cfg.server_fanout_interval_secs,
        snapshot_reuse_secs=cfg.snapshot_reuse_secs,
        catch_up_max_share=cfg.catch_up_max_share,
        redirect_addrs=tuple(cfg.redirect_addrs),
        client_cn=cfg.client_cn,
        client_urisan=cfg.client_urisan,
        max_kvs_per_message=cfg.server_max_message_size,
        v3_resource_versions=cfg.datastore_type == "kubernetes",
    )


def server_tls_settings(cfg: Config) -> ServerTLSSettings | None:
    if not cfg.tls_enabled:
        return None
    return ServerTLSSettings(cfg.server_cert_file, cfg.server_key_file, cfg.ca_file)


def rebalance_settings(cfg: Config) -> RebalanceSettings | None:
    if cfg.connection_rebalancing_mode != "kubernetes":
        return None
    from typha.k8s_rebalance import RebalanceSettings

    return RebalanceSettings(
        lower_limit=cfg.max_connections_lower_limit,
        upper_limit=cfg.max_connections_upper_limit,
        poll_interval=cfg.k8s_service_poll_interval_secs,
        namespace=cfg.k8s_namespace,
        service_name=cfg.k8s_service_name,
        port_name=cfg.k8s_port_name,
        server_host=cfg.server_host,
        redirect_addrs=tuple(cfg.redirect_addrs),
    )


def metrics_settings(cfg: Config) -> MetricsSettings:
    return MetricsSettings(
        enabled=cfg.prometheus_metrics_enabled,
        host=cfg.prometheus_metrics_host,
        port=max(cfg.prometheus_metrics_port, 0),
        runtime_collectors=cfg.prometheus_go_metrics_enabled,
        process_collectors=cfg.prometheus_process_metrics_enabled,
        cert_file=cfg.prometheus_metrics_cert_file,
        key_file=cfg.prometheus_metrics_key_file,
        ca_file=cfg.prometheus_metrics_ca_file,
        client_auth=cfg.prometheus_metrics_client_auth,
    )


def build_settings(cfg: Config) -> TyphaSettings:
    return TyphaSettings(
        datastore=datastore_settings(cfg),
        cache=cache_settings(cfg),
        server=server_settings(cfg),
        tls=server_tls_settings(cfg),
        health=HealthSettings(cfg.health_enabled, cfg.health_host, max(cfg.health_port, 0)),
        metrics=metrics_settings(cfg),
        persist=PersistSettings(cfg.cache_file_path, cfg.cache_save_interval_secs),
        rebalance=rebalance_settings(cfg),
    )


def build_datastore(settings: DatastoreSettings) -> Datastore:
    """The datastore the settings ask for (imported lazily: each pulls its own client code)."""
    if settings.kind == "memory":
        from typha.sync.memory import MemoryDatastore

        return MemoryDatastore()
    if settings.kind == "etcdv3":
        from typha.sync.etcd import EtcdDatastore

        assert settings.etcd is not None
        return EtcdDatastore.from_settings(settings.etcd)
    from typha.sync.kubernetes import KubernetesDatastore  # type: ignore[import-not-found]

    return KubernetesDatastore.from_environment()


def build_feed(cfg: Config) -> CacheFeed:
    return CacheFeed.from_settings(cache_settings(cfg))


class Typha:
    """One running Typha process (also used in-process by tests and the demo)."""

    def __init__(self, cfg: Config, datastore: Datastore | None = None) -> None:
        self.cfg = cfg
        self.settings = settings = build_settings(cfg)
        for name, reason in no_effect_settings(cfg):
            log.warning("setting has no effect", setting=name, value=cfg.value(name), reason=reason)
        self.datastore = datastore or build_datastore(settings.datastore)
        self.feed = CacheFeed.from_settings(settings.cache)
        self.health = HealthAggregator()
        self.start_revision: int | None = None
        self._save_lock = trio.Lock()
        self._draining = False
        # Called in the worker thread between writing the temporary file and renaming it
        # (tests hold a save there to interleave it with a signal deterministically).
        self.before_cache_replace: Callable[[], None] | None = None
        epoch = self._warm_start() if settings.persist.path else None
        ssl_ctx = None
        if settings.tls is not None:
            tls = settings.tls
            ssl_ctx = server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file)
        # Typha's typha_breadcrumb_size: the KVs of every breadcrumb minted.
        self.feed.on_crumbs = _observe_breadcrumb_sizes
        self.server = SyncServer(
            settings.server,
            self.feed,
            ssl_context=ssl_ctx,
            on_liveness=self._server_alive,
            epoch=epoch,
        )
        for syncer in self.feed.views:
            self.health.register(f"{syncer}-cache", timeout=20)
        self.health.register("SyncServer", timeout=20)
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self.nursery: trio.Nursery | None = None
        self.extra_tasks: list[Callable[..., Any]] = []
        self._exported: dict[Any, tuple[int, int]] = {}
        if settings.rebalance is not None:
            from typha.k8s_rebalance import rebalance_task

            self.extra_tasks.append(rebalance_task(self, settings.rebalance))

    def _warm_start(self) -> int | None:
        """Load the warm-restart file if there is a usable one; returns its epoch.

        While Typha starts (``gc_tuning.relaxed``) the collector does not run during the load
        and the loaded cache is frozen right after it: every object the load makes is either
        garbage freed by reference counting (the file's unpacked form) or lives as long as the
        process (the cache); the collections would only walk them (~0.05 of ~0.25 CPU-s of a
        warm start at 20,000 endpoints, after the imports)."""
        if not gc_tuning.relaxed():
            return self._load_cache_file()
        with gc_tuning.paused():
            epoch = self._load_cache_file()
        # Nothing else is on the heap yet but the modules: no garbage is frozen with it.
        gc.freeze()
        return epoch

    def _load_cache_file(self) -> int | None:
        path = self.settings.persist.path
        try:
            saved = persist.read_cache_file(path)
        except persist.CacheFileOutdated as exc:
            log.warning("cache file has an older format; starting cold", path=path, error=str(exc))
            metrics.warm_restart_loads.labels("outdated").inc()
            return None
        except persist.CacheFileError as exc:
            log.warning("ignoring unusable cache file", path=path, error=str(exc))
            metrics.warm_restart_loads.labels("corrupt").inc()
            return None
        if saved is None:
            metrics.warm_restart_loads.labels("missing").inc()
            return None
        try:
            loaded = persist.restore(self.feed, saved)
        except persist.CacheFileError as exc:
            log.warning("ignoring unusable cache file", path=path, error=str(exc))
            metrics.warm_restart_loads.labels("corrupt").inc()
            self.feed = CacheFeed.from_settings(self.settings.cache)
            return None
        self.start_revision = loaded.revision
        del saved  # the file's unpacked form: freed now (by reference counting)
        metrics.warm_restart_loads.labels("loaded" if loaded.clean else "loaded-unclean").inc()
        log.info(
            "warm restart: cache loaded",
            path=path,
            keys=loaded.keys,
            revision=loaded.revision,
            clean=loaded.clean,
            age_s=round(time.time() - loaded.saved_at, 1),
        )
        # Keep the epoch only after a clean shutdown; otherwise clients may hold sequence
        # numbers this file never saw, and must resume by revision instead (a new epoch).
        return loaded.epoch if loaded.clean else None

    async def save_cache(self, *, clean: bool = False) -> None:
        """Save the cache file. Saves are serialized: the periodic one and those around a
        drain write the same temporary file, and racing on it lost one of them (and made the
        drain's fail). The write runs in a worker thread that is not abandoned on cancel, so
        the lock is held until the file is complete."""
        path = self.settings.persist.path
        if not path:
            return
        # The clean save (the last one, at shutdown) also saves each KV's gob snapshot body,
        # so the next process serves its first gob snapshots without encoding every value
        # (~0.2 CPU-s at 20,000 endpoints, spent here instead, after the clients have left).
        v3 = self.settings.server.v3_resource_versions
        bodies: persist.BodyEncoder | None = None
        if clean:
            encode = functools.partial(snapshot_body, v3_resource_versions=v3)
            bodies = (snapshot_body_variant(v3), encode)
        async with self._save_lock:
            snap = persist.snapshot_for_save(self.feed, self.server.epoch, clean=clean)
            size = await trio.to_thread.run_sync(
                functools.partial(
                    _write_cache_file, path, snap, bodies, before_replace=self.before_cache_replace
                )
            )
        log.info("cache saved", path=path, bytes=size, clean=clean)

    async def _save_or_log(self, *, clean: bool = False) -> bool:
        try:
            await self.save_cache(clean=clean)
        except Exception as exc:  # a disk problem must not stop a drain or the process
            log.warning("cache save failed", path=self.settings.persist.path, error=str(exc))
            return False
        return True

    async def _save_periodically(self) -> None:
        while not self._draining:
            await trio.sleep(self.settings.persist.save_interval)
            if self._draining:
                return  # the drain saves (clean) at its end; a late save must not follow it
            await self._save_or_log()

    def _server_alive(self) -> None:
        self.health.report("SyncServer", live=True, ready=True)

    async def _report_caches(self) -> None:
        while True:
            for syncer, view in self.feed.views.items():
                in_sync = view.status is SyncStatus.IN_SYNC
                self.health.report(
                    f"{syncer}-cache",
                    live=True,
                    ready=in_sync,
                    detail=view.status.name.lower().replace("_", "-"),
                )
                metrics.cache_size.labels(str(syncer)).set(len(view))
                metrics.cache_tombstones.labels(str(syncer)).set(view.tombstone_count)
                metrics.history_breadcrumbs.labels(str(syncer)).set(len(view.crumbs))
                self._count(syncer, view)
            metrics.datastore_connected.set(1 if self.feed.connected else 0)
            # Report at once on a status change; after updates at most every
            # REPORT_MIN_INTERVAL_SECS (waking on each of them cost ~5 % of the server's CPU at
            # 1,000 writes/s); else every few seconds.
            with trio.move_on_after(5):
                await self._report_due(trio.current_time() + REPORT_MIN_INTERVAL_SECS)

    async def _report_due(self, not_before: float) -> None:
        """Return on a status change, or on an update once ``not_before`` has passed."""
        async with trio.open_nursery() as nursery:

            async def on_status() -> None:
                await self.feed.status_event().wait()
                nursery.cancel_scope.cancel()

            async def on_update() -> None:
                await _any_event([self.feed.changed_event(s) for s in self.feed.views])
                await trio.sleep_until(not_before)
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_status)
            nursery.start_soon(on_update)

    def _count(self, syncer: Any, view: Any) -> None:
        # Views count with plain integers on the hot path; export the growth since last time.
        last_total, last_skipped = self._exported.get(syncer, (0, 0))
        total, skipped = view.stats.updates_total, view.stats.updates_skipped
        metrics.updates_total.labels(str(syncer)).inc(total - last_total)
        metrics.updates_skipped.labels(str(syncer)).inc(skipped - last_skipped)
        self._exported[syncer] = (total, skipped)

    def routes(self) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
        def liveness() -> tuple[int, str, bytes]:
            ok = self.health.live()
            return (200 if ok else 503), "text/plain", self.health.table().encode()

        def readiness() -> tuple[int, str, bytes]:
            ok = self.health.ready()
            return (200 if ok else 503), "text/plain", self.health.table().encode()

        def status() -> tuple[int, str, bytes]:
            body = self.server.status()
            ds = self.datastore
            body["datastore"] = {
                "name": getattr(ds, "name", type(ds).__name__),
                "connected": self.feed.connected,
                "warm_started": self.start_revision is not None,
                "resyncs": getattr(ds, "resyncs", None),
                "invalid_values": getattr(ds, "invalid_values", None),
            }
            return 200, "application/json", json.dumps(body, indent=1).encode()

        return {"/liveness": liveness, "/readiness": readiness, "/status": status}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._initialize_then_sync)
            if settings.persist.path:
                nursery.start_soon(self._save_periodically)
            port = await nursery.start(self.server.run)
            nursery.start_soon(self._report_caches)
            health = settings.health
            if health.enabled:
                self.health_port = await nursery.start(
                    serve_http, health.host, health.port, self.routes()
                )
            if settings.metrics.enabled:
                # Not prometheus-client's server: it gives every connection a thread with no
                # timeout (2,000 idle connections were 2,000 threads) and, with TLS, does the
                # handshake in its accept loop, where one idle client stops every scrape.
                self.metrics_port = await nursery.start(
                    functools.partial(
                        serve_http,
                        settings.metrics.host,
                        settings.metrics.port,
                        metrics_routes(settings.metrics),
                        ssl_context=metrics_ssl_context(settings.metrics),
                    )
                )
            for task in self.extra_tasks:
                nursery.start_soon(task)
            task_status.started(port)
            nursery.start_soon(self._freeze_after_first_sync)
            nursery.start_soon(heap.trim_periodically)
            if any(v.saved_bodies is not None for v in self.feed.views.values()):
                nursery.start_soon(self._forget_saved_bodies)
            await self.server.stopped.wait()
            nursery.cancel_scope.cancel()

    async def _initialize_then_sync(self) -> None:
        """Like Calico Typha: create the start-up objects (ClusterInformation, Calico's own tiers)
        if missing, then sync, so the first snapshot already holds them, with the keys no
        datastore stores (the default-allow profile) added."""
        await ensure_initialized(self.datastore)
        sink = WithSyntheticKeys(self.feed) if is_calico_datastore(self.datastore) else self.feed
        await self.datastore.run(sink, start_revision=self.start_revision)

    async def _freeze_after_first_sync(self) -> None:
        """Once the first full list is in, its objects live as long as the process: move them
        out of the collector's reach so full collections stop walking them (a 20k-key cache
        otherwise costs ~100 ms pauses, measured in load/bench_core). The full collection before
        the freeze walks the whole cache (~0.2 s at 20,000 endpoints), so it waits a moment:
        the clients waiting for the first in-sync get it (and their snapshots) first."""
        while not self.feed.in_sync:
            await self.feed.changed_event(next(iter(self.feed.views))).wait()
        await trio.sleep(FREEZE_DELAY_SECS)
        gc.collect()
        gc.freeze()
        gc_tuning.restore()
        # The list's pages and transient values are free now: give their pages back (RSS
        # once ready at 20,000 endpoints: 97 -> 77 MiB).
        await heap.trim_in_thread()
        log.info("cache loaded; collector frozen", frozen=gc.get_freeze_count())

    async def _forget_saved_bodies(self) -> None:
        """The bodies loaded with the cache file serve the snapshots of the clients that
        reconnect after the restart; later ones encode their snapshot as after a cold start,
        and the memory (about the size of the values again) goes back."""
        await trio.sleep(SAVED_BODIES_KEEP_SECS)
        for view in self.feed.views.values():
            view.saved_bodies = None

    async def drain_and_stop(self) -> None:
        """Drain; always, whatever the cache file does. Periodic saves stop; the last save is
        the clean one."""
        self._draining = True
        # Save before the drain too: clients that move to a replica restarted from this file
        # can resume; then again after, with whatever changed meanwhile.
        with trio.move_on_after(10):
            await self._save_or_log()
        await self.server.drain()
        with trio.move_on_after(10):
            await self._save_or_log(clean=True)


def _write_cache_file(
    path: str,
    snap: dict[str, Any],
    bodies: persist.BodyEncoder | None,
    *,
    before_replace: Callable[[], None] | None,
) -> int:
    """In the worker thread: the saved bodies (if any), then pack and write."""
    if bodies is not None:
        persist.add_saved_bodies(snap, bodies)
    return persist.write_cache_file(path, snap, before_replace=before_replace)


def _observe_breadcrumb_sizes(syncer: Any, crumbs: list[Any]) -> None:
    size = metrics.breadcrumb_size.labels(str(syncer))
    for crumb in crumbs:
        size.observe(crumb.n_kvs)


async def _any_event(events: list[trio.Event]) -> None:
    async with trio.open_nursery() as nursery:
        for ev in events:

            async def wait(ev: trio.Event = ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def metrics_routes(settings: MetricsSettings) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    """The Prometheus endpoint's routes (served by the same bounded server as /readiness)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        REGISTRY,
        generate_latest,
    )

    if not settings.process_collectors:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(PROCESS_COLLECTOR)
    if not settings.runtime_collectors:
        for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR):
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(collector)

    def scrape() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)

    return {"/metrics": scrape, "/": scrape}


def metrics_ssl_context(settings: MetricsSettings) -> ssl.SSLContext | None:
    """HTTPS for /metrics when a certificate is configured; client certificates as
    ``PrometheusMetricsClientAuth`` says (RequireAnyClientCert is verified too: Python cannot
    require a certificate without checking it)."""
    if not (settings.cert_file or settings.key_file):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.ca_file:
        ctx.load_verify_locations(settings.ca_file)
    auth = settings.client_auth
    if auth in ("RequireAndVerifyClientCert", "RequireAnyClientCert"):
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif auth == "VerifyClientCertIfGiven":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


async def serve(cfg: Config, datastore: Datastore | None = None) -> None:
    """Run Typha until SIGTERM/SIGINT, then drain gracefully (docs/architecture.md, "Drain")."""
    gc_tuning.relax_for_loading()  # until the first sync is in and frozen (see gc_tuning)
    typha = Typha(cfg, datastore)
    async with trio.open_nursery() as nursery:
        await nursery.start(typha.run)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received; draining", signal=signal.Signals(signum).name)
                break
        await typha.drain_and_stop()
        nursery.cancel_scope.cancel()
    log.info("Typha has shut down")
