"""`typha serve`: wire config, datastore, cache, server, health, metrics and signals together."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import signal
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
        if not self.cfg.cache_file_path:
            return
        snap = persist.snapshot_for_save(self.feed, self.server.epoch, clean=clean)
        size = await trio.to_thread.run_sync(
            persist.write_cache_file, self.cfg.cache_file_path, snap
        )
        log.info("cache saved", path=self.cfg.cache_file_path, bytes=size)

    async def _save_periodically(self) -> None:
        while True:
            await trio.sleep(self.cfg.cache_save_interval_secs)
            try:
                await self.save_cache()
            except OSError as exc:
                log.warning("cache save failed", error=str(exc))

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
            nursery.start_soon(
                functools.partial(self.datastore.run, self.feed, start_revision=self.start_revision)
            )
            if cfg.cache_file_path:
                nursery.start_soon(self._save_periodically)
            port = await nursery.start(self.server.run)
            nursery.start_soon(self._report_caches)
            if cfg.health_enabled:
                self.health_port = await nursery.start(
                    serve_http, cfg.health_host, max(cfg.health_port, 0), self.routes()
                )
            if cfg.prometheus_metrics_enabled:
                start_metrics_server(cfg)
            for task in self.extra_tasks:
                nursery.start_soon(task)
            task_status.started(port)
            nursery.start_soon(self._freeze_after_first_sync)
            await self.server.stopped.wait()
            nursery.cancel_scope.cancel()

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
        # Save before the drain too: clients that move to a replica restarted from this file
        # can resume; then again after, with whatever changed meanwhile.
        with trio.move_on_after(10):
            await self.save_cache()
        await self.server.drain()
        with trio.move_on_after(10):
            await self.save_cache(clean=True)


async def _any_event(events: list[trio.Event]) -> None:
    async with trio.open_nursery() as nursery:
        for ev in events:

            async def wait(ev: trio.Event = ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def start_metrics_server(cfg: Config) -> None:
    """Prometheus endpoint (prometheus-client's own threaded server; HTTPS when configured)."""
    from prometheus_client import (
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        REGISTRY,
        start_http_server,
    )

    if not cfg.prometheus_process_metrics_enabled:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(PROCESS_COLLECTOR)
    if not cfg.prometheus_go_metrics_enabled:
        for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR):
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(collector)
    tls: dict[str, Any] = {}
    if cfg.prometheus_metrics_cert_file or cfg.prometheus_metrics_key_file:
        tls = {
            "certfile": cfg.prometheus_metrics_cert_file,
            "keyfile": cfg.prometheus_metrics_key_file,
        }
        if cfg.prometheus_metrics_ca_file:
            tls["client_cafile"] = cfg.prometheus_metrics_ca_file
        tls["client_auth_required"] = cfg.prometheus_metrics_client_auth in (
            "RequireAndVerifyClientCert",
            "RequireAnyClientCert",
        )
    addr = cfg.prometheus_metrics_host or "0.0.0.0"
    start_http_server(cfg.prometheus_metrics_port, addr=addr, **tls)
    log.info("metrics server listening", port=cfg.prometheus_metrics_port, tls=bool(tls))


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
