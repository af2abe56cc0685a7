"""The node side of the sync protocol: connect to a Typha, stay in sync, resume when possible.

``SyncClient.run`` connects to one of several addresses (shuffled), handshakes, applies the
snapshot and deltas into ``state``, answers pings with its position, enforces a read timeout
(Felix's TyphaReadTimeout, 30 s), honours a Goodbye's delay and address, and reconnects with
jittered exponential backoff, resuming when the server can.
"""

from __future__ import annotations

import contextlib
import gc
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

from typha import __version__
from typha.protocol import (
    CLIENT_DEFAULT_MAX_FRAME,
    COMPRESSION_ZSTD,
    KNOWN_FEATURES,
    BatchEnd,
    ClientSession,
    ConnectionEnded,
    Event,
    GoodbyeReceived,
    Handshake,
    KVBatch,
    KVKind,
    KVs,
    Pinged,
    ProtocolError,
    SessionShell,
    StatusChanged,
    SyncStatus,
)
from typha.tls import check_peer_identity

log = structlog.get_logger(__name__)


class SyncCallbacks(Protocol):
    def on_updates(self, updates: list[tuple[str, Any]]) -> None: ...
    def on_status(self, status: SyncStatus) -> None: ...


class _NoCallbacks:
    def on_updates(self, updates: list[tuple[str, Any]]) -> None:
        pass

    def on_status(self, status: SyncStatus) -> None:
        pass


@dataclass
class ClientStats:
    connects: int = 0
    connect_failures: int = 0
    snapshots: int = 0
    resumes: int = 0
    catchups: int = 0
    goodbyes: int = 0
    read_timeouts: int = 0
    protocol_errors: int = 0
    disconnects: int = 0
    frames: int = 0
    kvs: int = 0
    bytes: int = 0
    last_goodbye: str = ""
    last_error: str = ""
    snapshot_seconds: list[float] = field(default_factory=list)


class SessionEnded(Exception):
    """The current connection is over; ``delay``/``address`` come from a Goodbye."""

    def __init__(self, reason: str, delay: float | None = None, address: str | None = None):
        super().__init__(reason)
        self.delay = delay
        self.address = address


_gc_pauses = 0


def _pause_gc() -> None:
    # Decoding a snapshot allocates many small containers; the cyclic GC would run over them
    # again and again (3x slower decode with GC on: docs/architecture.md, "Measured costs
    # behind the design").
    global _gc_pauses
    _gc_pauses += 1
    gc.disable()


def _resume_gc() -> None:
    global _gc_pauses
    _gc_pauses = max(0, _gc_pauses - 1)
    if _gc_pauses == 0:
        gc.enable()


def parse_address(addr: str, default_port: int = 5473) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        return addr.strip("[]"), default_port
    return host.strip("[]"), int(port)


class SyncClient(SessionShell):
    def __init__(
        self,
        addresses: Sequence[str] | Callable[[], Sequence[str]],
        node: str,
        syncer: str = "felix",
        *,
        callbacks: SyncCallbacks | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_cn: str = "",
        server_uri_san: str = "",
        read_timeout: float = 30.0,
        write_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_frame: int = CLIENT_DEFAULT_MAX_FRAME,
        features: Sequence[str] = tuple(sorted(KNOWN_FEATURES)),
        compression: bool = True,
        keep_state: bool = True,
        backoff_base: float = 0.1,
        backoff_cap: float = 10.0,
        client_version: str = __version__,
    ) -> None:
        self._addresses = addresses
        self.node = node
        self.syncer = syncer
        self.callbacks = callbacks or _NoCallbacks()
        self.ssl_context = ssl_context
        self.server_cn = server_cn
        self.server_uri_san = server_uri_san
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.features = tuple(features)
        self.compressions = (COMPRESSION_ZSTD,) if compression else ()
        self.keep_state = keep_state
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.client_version = client_version

        self.conn_id = random.getrandbits(63)
        # Position, status, state and the protocol's rules: one sans-IO session, kept across
        # connections. This class does the I/O around it.
        self.session = ClientSession(
            node,
            syncer,
            client_version=client_version,
            compressions=self.compressions,
            features=self.features,
            resume=keep_state,
            keep_state=keep_state,
            conn_id=self.conn_id,
            max_frame=max_frame,
        )
        self.connected_to: str | None = None
        self.in_sync = trio.Event()
        self.stats = ClientStats()
        self.on_kvs: Callable[[KVs], None] | None = None  # raw hook (latency measurement)
        self._snapshot_started: float | None = None
        self._preferred: str | None = None
        self._session_scope: trio.CancelScope | None = None

    # --- Public ----------------------------------------------------------------------------------

    def addresses(self) -> list[str]:
        if callable(self._addresses):
            # Discovery orders its answer (this node's Typhas first, each group shuffled).
            addrs = list(self._addresses())
        else:
            addrs = list(self._addresses)
            random.shuffle(addrs)
        if self._preferred:
            addrs = [self._preferred] + [a for a in addrs if a != self._preferred]
        return addrs

    async def run(self) -> None:
        """Stay connected until cancelled."""
        failures = 0
        while True:
            delay: float | None = None
            for addr in self.addresses() or []:
                try:
                    await self._session(addr)
                except SessionEnded as end:
                    self.stats.disconnects += 1
                    self.stats.last_error = str(end)
                    log.info("typha session ended", node=self.node, addr=addr, reason=str(end))
                    self._preferred = end.address
                    delay = end.delay
                    if self.status is SyncStatus.IN_SYNC or end.delay is not None:
                        failures = 0
                    break
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.stats.connect_failures += 1
                    self.stats.last_error = f"{addr}: {exc or type(exc).__name__}"
                    log.debug("typha connection failed", node=self.node, addr=addr, error=str(exc))
                    await trio.sleep(0.1)  # Felix pauses 100 ms between attempts
                    continue
                finally:
                    self.session.connection_lost()
                    self._end_snapshot()
            failures += 1
            if delay is None:
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**failures))
            await trio.sleep(delay)

    def drop_connection(self) -> None:
        """Abort the current connection (the client reconnects and tries to resume)."""
        if self._session_scope is not None:
            self._session_scope.cancel()

    # --- One connection --------------------------------------------------------------------------

    async def _session(self, addr: str) -> None:
        host, port = parse_address(addr)
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if self.ssl_context is not None:
                tls = trio.SSLStream(stream, self.ssl_context, server_hostname=host)
                try:
                    await tls.do_handshake()
                except (ssl.SSLError, trio.BrokenResourceError) as exc:
                    await trio.aclose_forcefully(stream)
                    raise OSError(f"TLS handshake failed: {exc}") from None
                except BaseException:
                    # Cancelled or timed out mid-handshake: close the socket now, not when
                    # the collector finds it (a ResourceWarning, under -W error a failure).
                    await trio.aclose_forcefully(stream)
                    raise
                # Like Felix: the chain is verified by the context; the identity is checked
                # against the configured CN / URI SAN rather than the address we dialled.
                problem = check_peer_identity(
                    tls.getpeercert(), self.server_cn, self.server_uri_san
                )
                if problem:
                    await tls.aclose()
                    raise OSError(f"Typha's certificate refused: {problem}")
                stream = tls
        self.stats.connects += 1
        self.connected_to = addr
        try:
            with trio.CancelScope() as scope:
                self._session_scope = scope
                await self._stream(stream)
            raise SessionEnded("connection dropped by the client")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self.session.server_hello is None:
                raise  # refused before the handshake was through: a failed connection attempt
            # An established stream that broke (a reset from a killed Typha, say) is a
            # disconnect, as an end of file is (the load tool's clients count it so too).
            raise SessionEnded(f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            self._session_scope = None
            self.connected_to = None
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(Exception),
            ):
                await stream.aclose()

    async def _stream(self, stream: trio.abc.Stream) -> None:
        session = self.session
        await self._send(stream, session.connect())
        while True:
            with trio.move_on_after(self.read_timeout) as scope:
                data = await stream.receive_some(1 << 18)
            if scope.cancelled_caught:
                self.stats.read_timeouts += 1
                raise SessionEnded(f"no data from Typha for {self.read_timeout:g}s")
            self.stats.bytes += len(data)
            session.receive_data(data)
            # Handle everything received before replying: a Goodbye that arrived with a Ping
            # is seen even if the server has already closed and the Pong cannot be sent.
            try:
                while (event := session.next_event()) is not None:
                    self._handle(event)
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                raise SessionEnded(f"protocol error: {exc.reason}") from None
            replies = session.data_to_send()
            if replies:
                await self._send(stream, replies)

    async def _send(self, stream: trio.abc.Stream, data: bytes) -> None:
        with trio.move_on_after(self.write_timeout) as scope:
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise SessionEnded(f"write to Typha blocked for {self.write_timeout:g}s")

    def _handle(self, event: Event) -> None:
        match event:
            case KVBatch():
                self.stats.frames += 1
                self.stats.kvs += event.count
                if self.on_kvs is not None and event.message is not None:
                    self.on_kvs(event.message)
                self.callbacks.on_updates(list(event.kvs or ()))
            case Pinged():
                self.stats.frames += 1
            case StatusChanged(status=status):
                self.stats.frames += 1
                self.callbacks.on_status(status)
                if status is SyncStatus.IN_SYNC:
                    self.in_sync.set()
            case BatchEnd():
                self.stats.frames += 1
                if event.deleted:
                    self.callbacks.on_updates([(k, None) for k in event.deleted])
                if event.kind is KVKind.SNAPSHOT:
                    self.stats.snapshots += 1
                    if self._snapshot_started is not None:
                        self.stats.snapshot_seconds.append(
                            time.monotonic() - self._snapshot_started
                        )
                    self._end_snapshot()
                else:
                    self.stats.catchups += 1
            case Handshake(resumed=resumed):
                self.stats.frames += 1
                if resumed:
                    self.stats.resumes += 1
                    log.debug("resumed", node=self.node, seq=self.seq)
                else:
                    self._snapshot_started = time.monotonic()
                    _pause_gc()  # until the snapshot's end: see _pause_gc
            case GoodbyeReceived(message=bye):
                self.stats.frames += 1
                self.stats.goodbyes += 1
                self.stats.last_goodbye = bye.reason
                raise SessionEnded(f"goodbye: {bye.reason}", bye.reconnect_delay, bye.address)
            case ConnectionEnded():
                raise SessionEnded("Typha closed the connection")

    def _end_snapshot(self) -> None:
        if self._snapshot_started is not None:
            self._snapshot_started = None
            _resume_gc()
