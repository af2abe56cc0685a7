"""The sync server: accepts clients on TCP 5473, fans breadcrumbs out, sheds and drains.

Tasks (all in the server's nursery): the accept loop(s), one shared fan-out per syncer view
(``fanout.py``), the connection governor (connection limit, liveness), and per-connection
nurseries. Connections see the server only through a ``ConnectionContext`` (``context.py``).
"""

from __future__ import annotations

import contextlib
import os
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio

from typha import __version__, metrics
from typha.cache.catchup import CatchUp, CatchUpCache
from typha.cache.feed import CacheFeed
from typha.cache.snapshot import Snapshot, SnapshotCache
from typha.model.keys import SyncerType
from typha.protocol.gob import sniff
from typha.tls import check_peer_identity, tls_error_text

from .connection import Connection
from .context import ConnectionContext
from .fanout import FanOut, FanOutMark
from .gob_connection import GobConnection
from .registry import ConnectionRegistry
from .settings import ServerSettings
from .transport import SocketTransport, StreamTransport, Transport

log = structlog.get_logger(__name__)


class SyncServer:
    def __init__(
        self,
        settings: ServerSettings,
        feed: CacheFeed,
        *,
        ssl_context: ssl.SSLContext | None = None,
        epoch: int | None = None,
        on_liveness: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.ssl_context = ssl_context
        self.version = __version__
        self.epoch = epoch if epoch is not None else random.getrandbits(63)
        self.on_liveness = on_liveness
        self.registry = ConnectionRegistry(list(feed.views))
        # Shared, not copied: the server's views of its clients are the registry's.
        self.connections: dict[int, Connection] = self.registry.connections
        self.by_syncer: dict[SyncerType, set[Connection]] = self.registry.by_syncer
        self.snapshots: dict[SyncerType, SnapshotCache] = {
            s: SnapshotCache(
                view,
                reuse_secs=settings.snapshot_reuse_secs,
                on_generated=self._snapshot_generated(s),
                on_reused=metrics.snapshots_reused.labels(str(s)).inc,
                on_encoded=self._snapshot_encoded(s),
            )
            for s, view in feed.views.items()
        }
        # One catch-up build at a time, server-wide: a flood of resumes cannot take more than
        # one worker thread's worth of encoding (typha/cache/catchup.py).
        catchup_builds = trio.CapacityLimiter(1)
        self.catchups: dict[SyncerType, CatchUpCache] = {
            s: CatchUpCache(
                view,
                max_share=settings.catch_up_max_share,
                reuse_secs=settings.snapshot_reuse_secs,
                limiter=catchup_builds,
                on_built=self._catchup_built(s),
            )
            for s, view in feed.views.items()
        }
        self.max_connections = settings.max_connections
        self.redirect_addrs: list[str] = list(settings.redirect_addrs)
        self.port: int | None = None
        self.shutting_down = False
        self._next_conn_id = (random.getrandbits(31) << 32) | 1
        self._listeners: list[trio.SocketListener] = []
        self.fanout_marks = {syncer: FanOutMark() for syncer in feed.views}
        self.context = ConnectionContext(
            epoch=self.epoch,
            server_version=self.version,
            views=feed.views,
            snapshots=self.snapshots,
            wait_for_crumb=feed.wait_for_crumb,
            registry=self.registry,
            settings=settings.connection,
            max_kvs_per_message=settings.max_kvs_per_message,
            v3_resource_versions=settings.v3_resource_versions,
            catchups=self.catchups,
            fanout_marks=self.fanout_marks,
        )
        self.nursery: trio.Nursery
        self.stopped = trio.Event()

    @staticmethod
    def _snapshot_generated(syncer: SyncerType) -> Callable[[Snapshot], None]:
        s = str(syncer)

        def record(snap: Snapshot) -> None:
            metrics.snapshots_generated.labels(s).inc()

        return record

    @staticmethod
    def _snapshot_encoded(syncer: SyncerType) -> Callable[[str, bytes], None]:
        """The size gauges, from our protocol's encodings (built on first use)."""
        s = str(syncer)

        def record(key: str, data: bytes) -> None:
            if key == "msgpack":
                metrics.snapshot_raw_bytes.labels(s).set(len(data))
            elif key == "msgpack+zstd":
                metrics.snapshot_compressed_bytes.labels(s).set(len(data))

        return record

    @staticmethod
    def _catchup_built(syncer: SyncerType) -> Callable[[CatchUp], None]:
        s = str(syncer)

        def record(c: CatchUp) -> None:
            metrics.catchups_built.labels(s).inc()
            metrics.catchup_kvs_built.labels(s).inc(c.n_kvs)

        return record

    # --- Running ---------------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        return self.registry.active

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or drained by :meth:`drain`."""
        host = self.settings.host or None
        self._listeners = await trio.open_tcp_listeners(self.settings.port, host=host)
        self.port = self._listeners[0].socket.getsockname()[1]
        log.info("sync server listening", port=self.port, epoch=self.epoch)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                interval = self.settings.fanout_interval
                for syncer, view in self.feed.views.items():
                    fanout = FanOut(
                        syncer,
                        view,
                        self.feed.wait_for_crumb,
                        self.by_syncer[syncer],
                        interval,
                        self.fanout_marks[syncer],
                    )
                    nursery.start_soon(fanout.run)
                nursery.start_soon(self._governor)
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener)
                task_status.started(self.port)
        finally:
            with trio.CancelScope(shield=True):
                for listener in self._listeners:
                    await listener.aclose()
            self.stopped.set()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while not self.shutting_down:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:  # EMFILE and friends: back off, keep serving the others
                log.warning("accept failed", error=str(exc))
                await trio.sleep(0.1)
                continue
            metrics.connections_accepted.inc()
            if self.active_connections >= self.max_connections or self.shutting_down:
                # Over the hard cap: refuse before spending anything on the client.
                metrics.connections_dropped.inc()
                await stream.aclose()
                continue
            # Count it now, not when its task first runs, so a burst cannot overshoot the cap.
            self.registry.handshaking += 1
            self.nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        # Counted as "handshaking" (by the accept loop) until the connection registers.
        metrics.connections_active.set(self.active_connections)
        conn: Connection | None = None
        # The hello (TLS handshake and first bytes included) must be complete by then.
        deadline = trio.current_time() + self.settings.connection.handshake_timeout
        try:
            transport = await self._make_transport(stream, conn_id, deadline)
            if transport is None:
                return
            conn = await self._route(transport, conn_id, deadline)
            if conn is not None:
                await conn.run()
        finally:
            if conn is None or not conn.registered:
                self.registry.handshaking -= 1
            metrics.connections_active.set(self.active_connections)

    async def _route(
        self, transport: Transport, conn_id: int, deadline: float
    ) -> Connection | None:
        """Read the first bytes and hand them, with the transport, to the connection of the
        protocol they begin (docs/protocol.md, 8.1): 0x00 our msgpack frames, else gob."""
        first = b""
        with trio.move_on_at(deadline):
            try:
                first = await transport.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                first = b""
        kind = sniff(first)
        if kind is None:
            if first:
                log.info("unknown protocol", conn_id=conn_id, first_byte=first[0])
                metrics.connections_by_protocol.labels("unknown").inc()
            await _close_quietly(transport)
            return None
        metrics.connections_by_protocol.labels(kind).inc()
        cls = GobConnection if kind == "gob" else Connection
        return cls(self.context, transport, conn_id, initial=first, handshake_deadline=deadline)

    async def _make_transport(
        self, stream: trio.SocketStream, conn_id: int, deadline: float
    ) -> Transport | None:
        if self.ssl_context is None:
            return SocketTransport(stream)
        peer = SocketTransport(stream).peer
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
        # The TLS handshake counts against the handshake timeout (Typha #7909).
        with trio.move_on_at(deadline) as scope:
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                log.info(
                    "TLS handshake failed", conn_id=conn_id, peer=peer, error=tls_error_text(exc)
                )
                await _close_quietly(stream)
                return None
        if scope.cancelled_caught:
            log.info("TLS handshake timed out", conn_id=conn_id, peer=peer)
            await _close_quietly(stream)
            return None
        problem = check_peer_identity(
            tls.getpeercert(), self.settings.client_cn, self.settings.client_urisan
        )
        if problem:
            log.warning("client certificate refused", conn_id=conn_id, peer=peer, reason=problem)
            await _close_quietly(tls)
            return None
        return StreamTransport(tls, peer)

    # --- Governor, rebalancing, drain ------------------------------------------------------------

    async def _governor(self) -> None:
        """Sheds connections above the limit, one per tick, and reports liveness."""
        interval = self.settings.connection_drop_interval
        while True:
            await trio.sleep(interval * random.uniform(0.9, 1.1))
            if self.on_liveness:
                self.on_liveness()
            metrics.connections_active.set(self.active_connections)
            self.context.input_budget.trim()
            if self.shutting_down:
                continue
            excess = len(self.connections) - self.max_connections
            if excess > 0:
                conn = random.choice(list(self.connections.values()))
                metrics.connections_dropped.inc()
                conn.close(
                    f"rebalancing: {len(self.connections)} connections, limit "
                    f"{self.max_connections}",
                    reconnect_delay=random.uniform(0, 1),
                    address=self.suggest_address(),
                )

    def set_connection_limit(self, limit: int) -> None:
        if limit != self.max_connections:
            log.info("connection limit changed", old=self.max_connections, new=limit)
            self.max_connections = limit

    def suggest_address(self) -> str | None:
        return random.choice(self.redirect_addrs) if self.redirect_addrs else None

    async def drain(self) -> None:
        """Graceful shutdown (docs/architecture.md, "Drain"): stop accepting, then drop
        connections spread over the shutdown timeout, each with a Goodbye saying when (and
        where) to reconnect."""
        self.shutting_down = True
        for listener in self._listeners:
            await listener.aclose()
        timeout = self.settings.shutdown_timeout
        started = time.monotonic()
        n = len(self.connections)
        log.info("draining", connections=n, timeout=timeout)
        if n:
            gap = min(timeout * 0.95 / n, self.settings.shutdown_drop_interval_max)
            while len(self.connections) > 1:
                conn = random.choice(list(self.connections.values()))
                # Spread the reconnects: each client waits a random part of one gap.
                conn.close(
                    "server shutting down",
                    reconnect_delay=random.uniform(0, gap),
                    address=self.suggest_address(),
                )
                await trio.sleep(gap * 0.95 + random.uniform(0, gap * 0.1))
                if time.monotonic() - started > timeout:
                    break
            for conn in list(self.connections.values()):
                conn.close(
                    "server shutting down", reconnect_delay=0, address=self.suggest_address()
                )
            with trio.move_on_after(6):
                while self.connections:
                    await trio.sleep(0.05)
        log.info("drained", secs=round(time.monotonic() - started, 3))
        self.nursery.cancel_scope.cancel()

    def status(self) -> dict[str, Any]:
        """The status endpoint's view: every client with its position and lag."""
        clients = []
        for conn in self.connections.values():
            view = conn.view
            info = conn.info
            head = view.head_seq if view else 0
            clients.append(
                {
                    "conn_id": info.conn_id,
                    "peer": info.peer,
                    "node": info.node,
                    "syncer": info.syncer,
                    "client_version": info.client_version,
                    "connected_secs": round(time.time() - info.connected_at, 3),
                    "acked_seq": info.acked_seq,
                    "acked_age_secs": round(time.time() - info.acked_at, 3)
                    if info.acked_at
                    else None,
                    "sent_seq": conn.next_seq - 1,
                    "head_seq": head,
                    "lag": max(0, head - info.acked_seq) if info.acked_seq >= 0 else None,
                    "bytes_sent": info.bytes_sent,
                    "resumed": info.resumed or None,
                    "compression": info.compression,
                }
            )
        return {
            "epoch": self.epoch,
            "version": self.version,
            # Lets load tools read this process's CPU and RSS from /proc.
            "pid": os.getpid(),
            "connections": len(self.connections),
            "max_connections": self.max_connections,
            "shutting_down": self.shutting_down,
            "views": {
                str(s): {
                    "status": v.status.name.lower().replace("_", "-"),
                    "keys": len(v),
                    "head_seq": v.head_seq,
                    "oldest_seq": v.oldest_seq,
                    "revision": v.revision,
                }
                for s, v in self.feed.views.items()
            },
            "clients": sorted(clients, key=lambda c: (c["syncer"], c["node"])),
        }


async def _close_quietly(stream: trio.abc.AsyncResource) -> None:
    with trio.move_on_after(1):
        with contextlib.suppress(Exception):
            await stream.aclose()
