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
from typing import Any

import structlog
import trio

from typha import metrics
from typha.cache import persist
from typha.cache.feed import CacheFeed
from typha.config import Config
from typha.health import HealthAggregator
from typha.http import serve_http
from typha.protocol import SyncStatus
from typha.server.server import SyncServer
from typha.sync.base import Datastore
from typha.sync.initialize import ensure_initialized, is_calico_datastore
from typha.sync.synthetic import WithSyntheticKeys
from typha.tls import server_ssl_context

log = structlog.get_logger(__name__)


def build_datastore(cfg: Config) -> Datastore:
    """The datastore the config asks for (imported lazily: each pulls its own client code)."""
    if cfg.datastore_in_memory:
        from typha.sync.memory import MemoryDatastore

        return MemoryDatastore()
    if cfg.datastore_type == "etcdv3":
        from typha.sync.etcd import EtcdDatastore

        return EtcdDatastore.from_config(cfg)
    from typha.sync.kubernetes import KubernetesDatastore  # type: ignore[import-not-found]

    return KubernetesDatastore.from_config(cfg)


def build_feed(cfg: Config) -> CacheFeed:
    return CacheFeed.create(
        max_batch_size=cfg.snapshot_cache_max_batch_size,
        max_history_secs=cfg.server_max_fall_behind_secs,
        max_history_updates=cfg.history_max_updates,
        tombstone_retention_secs=cfg.tombstone_retention_secs,
    )


class Typha:
    """One running Typha process (also used in-process by tests and the demo)."""

    def __init__(self, cfg: Config, datastore: Datastore | None = None) -> None:
        self.cfg = cfg
        self.datastore = datastore or build_datastore(cfg)
        self.feed = build_feed(cfg)
        self.health = HealthAggregator()
        self.start_revision: int | None = None
        self._save_lock = trio.Lock()
        self._draining = False
        # Called in the worker thread between writing the temporary file and renaming it
        # (tests hold a save there to interleave it with a signal deterministically).
        self.before_cache_replace: Callable[[], None] | None = None
        epoch = self._warm_start() if cfg.cache_file_path else None
        ssl_ctx = None
        if cfg.tls_enabled:
            ssl_ctx = server_ssl_context(cfg.server_cert_file, cfg.server_key_file, cfg.ca_file)
        self.server = SyncServer(
            cfg, self.feed, ssl_context=ssl_ctx, on_liveness=self._server_alive, epoch=epoch
        )
        for syncer in self.feed.views:
            self.health.register(f"{syncer}-cache", timeout=20)
        self.health.register("SyncServer", timeout=20)
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self.nursery: trio.Nursery | None = None
        self.extra_tasks: list[Callable[..., Any]] = []
        self._exported: dict[Any, tuple[int, int]] = {}
        if cfg.connection_rebalancing_mode == "kubernetes":
            from typha.k8s_rebalance import rebalance_task

            task = rebalance_task(self)
            if task is not None:
                self.extra_tasks.append(task)

    def _warm_start(self) -> int | None:
        """Load the warm-restart file if there is a usable one; returns its epoch."""
        path = self.cfg.cache_file_path
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
            self.feed = build_feed(self.cfg)
            return None
        self.start_revision = loaded.revision
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
        if not self.cfg.cache_file_path:
            return
        async with self._save_lock:
            snap = persist.snapshot_for_save(self.feed, self.server.epoch, clean=clean)
            size = await trio.to_thread.run_sync(
                functools.partial(
                    persist.write_cache_file,
                    self.cfg.cache_file_path,
                    snap,
                    before_replace=self.before_cache_replace,
                )
            )
        log.info("cache saved", path=self.cfg.cache_file_path, bytes=size, clean=clean)

    async def _save_or_log(self, *, clean: bool = False) -> bool:
        try:
            await self.save_cache(clean=clean)
        except Exception as exc:  # a disk problem must not stop a drain or the process
            log.warning("cache save failed", path=self.cfg.cache_file_path, error=str(exc))
            return False
        return True

    async def _save_periodically(self) -> None:
        while not self._draining:
            await trio.sleep(self.cfg.cache_save_interval_secs)
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
            # Report immediately on a status change, else every few seconds.
            with trio.move_on_after(5):
                await _any_event([self.feed.changed_event(s) for s in self.feed.views])

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
        cfg = self.cfg
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._initialize_then_sync)
            if cfg.cache_file_path:
                nursery.start_soon(self._save_periodically)
            port = await nursery.start(self.server.run)
            nursery.start_soon(self._report_caches)
            if cfg.health_enabled:
                self.health_port = await nursery.start(
                    serve_http, cfg.health_host, max(cfg.health_port, 0), self.routes()
                )
            if cfg.prometheus_metrics_enabled:
                # Not prometheus-client's server: it gives every connection a thread with no
                # timeout (2,000 idle connections were 2,000 threads) and, with TLS, does the
                # handshake in its accept loop, where one idle client stops every scrape.
                self.metrics_port = await nursery.start(
                    functools.partial(
                        serve_http,
                        cfg.prometheus_metrics_host,
                        max(cfg.prometheus_metrics_port, 0),
                        metrics_routes(cfg),
                        ssl_context=metrics_ssl_context(cfg),
                    )
                )
            for task in self.extra_tasks:
                nursery.start_soon(task)
            task_status.started(port)
            nursery.start_soon(self._freeze_after_first_sync)
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
        otherwise costs ~100 ms pauses, measured in load/bench_core)."""
        while not self.feed.in_sync:
            await self.feed.changed_event(next(iter(self.feed.views))).wait()
        gc.collect()
        gc.freeze()
        log.info("cache loaded; collector frozen", frozen=gc.get_freeze_count())

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


async def _any_event(events: list[trio.Event]) -> None:
    async with trio.open_nursery() as nursery:
        for ev in events:

            async def wait(ev: trio.Event = ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def metrics_routes(cfg: Config) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    """The Prometheus endpoint's routes (served by the same bounded server as /readiness)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        REGISTRY,
        generate_latest,
    )

    if not cfg.prometheus_process_metrics_enabled:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(PROCESS_COLLECTOR)
    if not cfg.prometheus_go_metrics_enabled:
        for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR):
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(collector)

    def scrape() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)

    return {"/metrics": scrape, "/": scrape}


def metrics_ssl_context(cfg: Config) -> ssl.SSLContext | None:
    """HTTPS for /metrics when a certificate is configured; client certificates as
    ``PrometheusMetricsClientAuth`` says (RequireAnyClientCert is verified too: Python cannot
    require a certificate without checking it)."""
    if not (cfg.prometheus_metrics_cert_file or cfg.prometheus_metrics_key_file):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg.prometheus_metrics_cert_file, cfg.prometheus_metrics_key_file)
    if cfg.prometheus_metrics_ca_file:
        ctx.load_verify_locations(cfg.prometheus_metrics_ca_file)
    auth = cfg.prometheus_metrics_client_auth
    if auth in ("RequireAndVerifyClientCert", "RequireAnyClientCert"):
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif auth == "VerifyClientCertIfGiven":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


async def serve(cfg: Config, datastore: Datastore | None = None) -> None:
    """Run Typha until SIGTERM/SIGINT, then drain gracefully (docs/architecture.md, "Drain")."""
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
