"""The sync server: accepts clients on TCP 5473, fans breadcrumbs out, sheds and drains.

Tasks (all in the server's nursery): the accept loop(s), one shared fan-out per syncer view,
the connection governor (connection limit, liveness), and per-connection nurseries.
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
from typha.cache.feed import CacheFeed
from typha.cache.snapshot import Snapshot, SnapshotCache
from typha.config import Config
from typha.model.keys import SyncerType
from typha.tls import check_peer_identity

from .connection import Connection
from .transport import SocketTransport, StreamTransport, Transport

log = structlog.get_logger(__name__)

# The fan-out catches idle clients up directly when they are at most this many breadcrumbs
# behind (one writev; IOV_MAX is 1024); further behind, their own writer follows the history.
_MAX_CATCH_UP = 512


class SyncServer:
    def __init__(
        self,
        cfg: Config,
        feed: CacheFeed,
        *,
        ssl_context: ssl.SSLContext | None = None,
        epoch: int | None = None,
        on_liveness: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.feed = feed
        self.ssl_context = ssl_context
        self.version = __version__
        self.epoch = epoch if epoch is not None else random.getrandbits(63)
        self.on_liveness = on_liveness
        self.connections: dict[int, Connection] = {}
        self.by_syncer: dict[SyncerType, set[Connection]] = {s: set() for s in feed.views}
        self.snapshots: dict[SyncerType, SnapshotCache] = {
            s: SnapshotCache(
                view,
                reuse_secs=cfg.snapshot_reuse_secs,
                on_generated=self._snapshot_generated(s),
                on_reused=metrics.snapshots_reused.labels(str(s)).inc,
            )
            for s, view in feed.views.items()
        }
        self.max_connections = cfg.max_connections_upper_limit
        self.redirect_addrs: list[str] = list(cfg.redirect_addrs)
        self.port: int | None = None
        self.shutting_down = False
        self._next_conn_id = (random.getrandbits(31) << 32) | 1
        self._listeners: list[trio.SocketListener] = []
        self._handshaking = 0
        self.nursery: trio.Nursery
        self.stopped = trio.Event()

    @staticmethod
    def _snapshot_generated(syncer: SyncerType) -> Callable[[Snapshot], None]:
        s = str(syncer)

        def record(snap: Snapshot) -> None:
            metrics.snapshots_generated.labels(s).inc()
            metrics.snapshot_raw_bytes.labels(s).set(snap.raw_bytes)
            metrics.snapshot_compressed_bytes.labels(s).set(snap.compressed_bytes)

        return record

    # --- Running ---------------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        return len(self.connections) + self._handshaking

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or drained by :meth:`drain`."""
        host = self.cfg.server_host or None
        self._listeners = await trio.open_tcp_listeners(self.cfg.listen_port, host=host)
        self.port = self._listeners[0].socket.getsockname()[1]
        log.info("sync server listening", port=self.port, epoch=self.epoch)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for syncer in self.feed.views:
                    nursery.start_soon(self._fanout, syncer)
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
            self._handshaking += 1
            self.nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        # Counted as "handshaking" (by the accept loop) until the connection registers.
        metrics.connections_active.set(self.active_connections)
        conn: Connection | None = None
        try:
            transport = await self._make_transport(stream, conn_id)
            if transport is None:
                return
            conn = Connection(self, transport, conn_id)
            await conn.run()
        finally:
            if conn is None or not conn.registered:
                self._handshaking -= 1
            metrics.connections_active.set(self.active_connections)

    async def _make_transport(self, stream: trio.SocketStream, conn_id: int) -> Transport | None:
        if self.ssl_context is None:
            return SocketTransport(stream)
        peer = SocketTransport(stream).peer
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
        # The TLS handshake counts against the handshake timeout (Typha #7909).
        with trio.move_on_after(self.cfg.server_handshake_timeout_secs) as scope:
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                log.info("TLS handshake failed", conn_id=conn_id, peer=peer, error=str(exc))
                await _close_quietly(stream)
                return None
        if scope.cancelled_caught:
            log.info("TLS handshake timed out", conn_id=conn_id, peer=peer)
            await _close_quietly(stream)
            return None
        problem = check_peer_identity(tls.getpeercert(), self.cfg.client_cn, self.cfg.client_urisan)
        if problem:
            log.warning("client certificate refused", conn_id=conn_id, peer=peer, reason=problem)
            await _close_quietly(tls)
            return None
        return StreamTransport(tls, peer)

    def register(self, conn: Connection) -> None:
        self._handshaking -= 1
        conn.registered = True
        self.connections[conn.info.conn_id] = conn
        assert conn.syncer is not None
        self.by_syncer[conn.syncer].add(conn)
        metrics.connections_streaming.labels(str(conn.syncer)).inc()

    def unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.info.conn_id, None)
        if conn.syncer is not None and conn in self.by_syncer[conn.syncer]:
            self.by_syncer[conn.syncer].discard(conn)
            metrics.connections_streaming.labels(str(conn.syncer)).dec()

    # --- Shared fan-out --------------------------------------------------------------------------

    async def _fanout(self, syncer: SyncerType) -> None:
        """Write each new run of breadcrumbs to every caught-up client with one direct write.

        The bytes are joined once per run (and compressed once per run for zstd clients);
        clients that are behind, busy or on TLS are woken to follow on their own.
        """
        view = self.feed.views[syncer]
        label = str(syncer)
        direct_writes = metrics.fanout_direct_writes.labels(label)
        slow = metrics.fanout_slow_wakeups.labels(label)
        latency = metrics.client_latency_secs.labels(label)
        seq_gauge = metrics.breadcrumb_seq_number.labels(label)
        size_gauge = metrics.cache_size.labels(label)
        interval = self.cfg.server_fanout_interval_secs
        last = view.head_seq
        run_secs = 0.0  # how long the previous run over all clients took
        while True:
            await self.feed.wait_for_crumb(syncer, last)
            # Coalesce a burst into one write per client. The window runs from the birth of
            # the oldest unsent breadcrumb, not from now: breadcrumbs that arrived while the
            # previous run was writing have waited long enough already. It is at least as long
            # as the previous run, so that with many clients the runs (whose cost grows with
            # clients x runs, not with updates) take at most about half of the loop.
            window = max(interval, run_secs)
            if window:
                oldest = next(view.crumbs_after(last), None)
                wait = window if oldest is None else window - (view.clock() - oldest.timestamp)
                if wait > 0:
                    await trio.sleep(wait)
                else:
                    await trio.lowlevel.checkpoint()  # never hog the loop between runs
            first, last = last + 1, view.head_seq
            seq_gauge.set(last)
            size_gauge.set(len(view))
            conns = self.by_syncer[syncer]
            if not conns:
                continue
            if view.oldest_seq > first:
                for conn in conns:
                    conn.wake()
                continue
            run_started = time.monotonic()
            crumbs = list(view.crumbs_after(first - 1))
            oldest_age = run_started - crumbs[0].timestamp
            plain: bytes | None = None
            compressed: bytes | None = None
            # Frames for idle clients a little behind, by (position, compression): a hiccup
            # leaves many clients at the same few positions.
            behind: dict[tuple[int, bool], list[bytes]] = {}
            oldest_seq = view.oldest_seq
            n = 0
            written = 0
            for conn in list(conns):
                if conn.next_seq == first:
                    if conn.zstd:
                        if compressed is None:
                            compressed = b"".join(c.frames_for(True) for c in crumbs)
                        data = compressed
                    else:
                        if plain is None:
                            plain = b"".join(c.frames for c in crumbs)
                        data = plain
                    wrote = conn.try_fast_write(first, last, data)
                elif oldest_seq <= conn.next_seq < first and last - conn.next_seq < _MAX_CATCH_UP:
                    key = (conn.next_seq, conn.zstd)
                    parts = behind.get(key)
                    if parts is None:
                        parts = behind[key] = [
                            c.frames_for(conn.zstd) for c in view.crumbs_after(conn.next_seq - 1)
                        ]
                    wrote = conn.try_fast_catch_up(last, parts)
                else:
                    wrote = -1
                if wrote >= 0:
                    n += 1
                    written += wrote
                else:
                    conn.wake()
                    slow.inc()
            run_secs = time.monotonic() - run_started
            if n:
                direct_writes.inc(n)
                latency.observe(oldest_age)
                metrics.bytes_sent.labels(label).inc(written)

    # --- Governor, rebalancing, drain ------------------------------------------------------------

    async def _governor(self) -> None:
        """Sheds connections above the limit, one per tick, and reports liveness."""
        interval = self.cfg.connection_drop_interval_secs
        while True:
            await trio.sleep(interval * random.uniform(0.9, 1.1))
            if self.on_liveness:
                self.on_liveness()
            metrics.connections_active.set(self.active_connections)
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
        """Graceful shutdown (typha.md §5.1): stop accepting, then drop connections spread over
        the shutdown timeout, each with a Goodbye saying when (and where) to reconnect."""
        self.shutting_down = True
        for listener in self._listeners:
            await listener.aclose()
        timeout = self.cfg.shutdown_timeout_secs
        started = time.monotonic()
        n = len(self.connections)
        log.info("draining", connections=n, timeout=timeout)
        if n:
            gap = min(timeout * 0.95 / n, self.cfg.shutdown_connection_drop_interval_max_secs)
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
