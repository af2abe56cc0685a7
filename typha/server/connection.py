"""One client connection: handshake, snapshot or resume, then deltas, pings and goodbyes.

Each connection owns one nursery with three tasks (reader, writer, pinger). It sees the server
only through a narrow :class:`~typha.server.context.ConnectionContext` (epoch, views,
snapshots, registry, its settings). Writes have a single owner at any time, held as an explicit
token (``ownership.py``): the connection's writer task, or, while the writer is idle and the
client is caught up on plain TCP, the shared fan-out (``fanout.py``), which writes the same
bytes to every caught-up client of a codec without waking any task (``try_fast_write``).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
import trio

from typha import metrics
from typha.cache.view import HistoryHold, SyncerView
from typha.model.keys import SyncerType
from typha.protocol import (
    COMPRESSION_ZSTD,
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    FEATURE_RESUME,
    ClientHello,
    Goodbye,
    Ping,
    Pong,
    ProtocolError,
    ServerProtocol,
    SyncStatusMsg,
    UnexpectedMessage,
    encode_payload,
    frame,
)

from .context import ConnectionContext
from .fastpath import MSGPACK, MSGPACK_ZSTD, FastPathCodec
from .ownership import FANOUT, WRITER, WriteToken
from .transport import Transport, WriteTimeout

log = structlog.get_logger(__name__)

# Until its hello is complete a client may hold at most this much unread input (a hello
# frame is well under 1 KiB); it also counts against the server-wide budget (budget.py).
HELLO_MAX_BUFFERED = 64 << 10

# What ``_gather`` returns when the client needs a conflated catch-up (which the writer awaits).
_CATCH_UP: list[bytes] = []

# Cap on the bytes one writer gathers before writing, so a far-behind client does not join a
# huge buffer of its own; the breadcrumbs themselves are shared.
_GATHER_LIMIT = 4 << 20


class SnapshotTails(NamedTuple):
    """What the first gather after a snapshot needs of it (see ``Snapshot.tails``)."""

    seq: int
    tails: dict[str, tuple[int, bytes, int]]


class ConnectionClosed(Exception):
    """Raised inside a connection's tasks to end it with a reason."""


@dataclass
class ClientInfo:
    """What the status endpoint shows about a client."""

    conn_id: int
    peer: str
    node: str = ""
    syncer: str = ""
    client_version: str = ""
    connected_at: float = field(default_factory=time.time)
    acked_seq: int = -1
    acked_at: float = 0.0
    bytes_sent: int = 0
    resumed: str = ""  # "", "seq", "revision", "catchup"
    compression: str | None = None


class Connection:
    def __init__(
        self,
        ctx: ConnectionContext,
        transport: Transport,
        conn_id: int,
        *,
        initial: bytes = b"",
        handshake_deadline: float | None = None,
    ) -> None:
        self.ctx = ctx
        # Bytes the server already read to tell the protocol (docs/protocol.md, 8.1), and
        # the trio time by which the hello must be complete (counted from the accept).
        self._initial_bytes = initial
        self._deadline = handshake_deadline
        self.settings = ctx.settings
        self.transport = transport
        self.proto = ServerProtocol()
        self.info = ClientInfo(conn_id, transport.peer)
        self.log = log.bind(conn_id=conn_id, peer=transport.peer)
        self.syncer: SyncerType | None = None
        self.view: SyncerView | None = None
        self.zstd = False
        self.codec: FastPathCodec = MSGPACK
        # Write ownership and position.
        self.next_seq = 0  # next breadcrumb to deliver
        self.write_token = WriteToken(WRITER)  # the writer's until it first goes idle
        self.pending: memoryview | None = None  # remainder of a short fast-path write
        self.control: list[bytes] = []
        self.streaming = False
        self.registered = False
        self.closing = False
        self._wake = trio.Event()
        self._cancel: trio.CancelScope | None = None
        self._last_pong = time.monotonic()
        self._send_status_after_gather = False
        # The shared snapshot just sent, for the first gather after it: only its position and
        # its shared tails (``_gather``), not the snapshot, which a join storm's joiners would
        # otherwise keep alive, every generation of it, for as long as they stay idle.
        self._after_snapshot: SnapshotTails | None = None
        self._grace: HistoryHold | None = None

    # --- Lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with trio.move_on_at(self._handshake_deadline()) as hs_scope:
                hello = await self._read_hello()
            if hs_scope.cancelled_caught:
                self.log.info("handshake timed out")
                return
            if hello is not None:
                await self._serve(hello)
        except ProtocolError as exc:
            # Before the hello we do not know whether the client understands Goodbye.
            metrics.protocol_errors.labels(type(exc).__name__).inc()
            self.log.warning("protocol error in handshake", reason=exc.reason)
        except ConnectionClosed as exc:
            self.log.info("closing connection", reason=str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.log.info("connection lost", error=str(exc) or type(exc).__name__)
        finally:
            self.end_grace()
            self.streaming = False
            self._stop_fast_path()
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(Exception),
            ):
                await self.transport.aclose()
            # Free the unread input before the budget counts it as gone: the heap is trimmed
            # by that count (budget.py).
            self.proto.discard_input()
            self.ctx.input_budget.release(self)

    async def _guarded(self, task, *args) -> None:  # type: ignore[no-untyped-def]
        """Run one of the connection's tasks; turn its ending into closing the connection."""
        try:
            await task(*args)
        except ConnectionClosed as exc:
            self.abort(str(exc))
        except ProtocolError as exc:
            metrics.protocol_errors.labels(type(exc).__name__).inc()
            self.log.warning("protocol error", reason=exc.reason)
            self.close(f"protocol error: {exc.reason}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.abort(f"connection lost: {exc or type(exc).__name__}")

    def _handshake_deadline(self) -> float:
        if self._deadline is not None:
            return self._deadline
        return trio.current_time() + self.settings.handshake_timeout

    async def _read_hello(self) -> ClientHello | None:
        data, self._initial_bytes = self._initial_bytes, b""
        budget = self.ctx.input_budget
        while True:
            if data:
                self.proto.receive_data(data)
                held = self.proto.buffered
                if held > HELLO_MAX_BUFFERED:
                    raise ConnectionClosed(f"{held} bytes before the hello (limit 64 KiB)")
                if not budget.charge(self, held):
                    raise ConnectionClosed("server-wide unauthenticated input budget exhausted")
                # The decoder keeps its own copy: holding this one too while waiting for more
                # would double what a stalled hello costs.
                data = b""
            event = self.proto.next_event()
            if event is not None:
                assert isinstance(event, ClientHello)
                budget.release(self)
                return event
            data = await self.transport.receive_some(65536)
            if not data:
                return None

    async def _serve(self, hello: ClientHello) -> None:
        ctx = self.ctx
        try:
            syncer = SyncerType(hello.syncer)
        except ValueError:
            syncer = None
        if syncer is None or syncer not in ctx.views:
            self.log.warning("unknown syncer type", syncer=hello.syncer)
            # Complete the handshake only to be able to say why, if the client understands it.
            if FEATURE_GOODBYE in hello.features:
                await self.transport.write_all(
                    self._accept(hello, resumed=False)
                    + self.proto.send(Goodbye(f"unknown syncer type {hello.syncer!r}")),
                    timeout=5,
                )
            return
        self.syncer = syncer
        self.view = ctx.views[syncer]
        self._bind_metrics(str(syncer))
        self.info.node, self.info.syncer = hello.node, str(syncer)
        self.info.client_version = hello.client_version
        self.log = self.log.bind(node=hello.node, syncer=str(syncer))

        await self._wait_for_revision(hello)
        start_seq, how = self._plan_start(hello)
        initial = self._accept(
            hello,
            resumed=start_seq is not None,
            resume_seq=start_seq,
        )
        self.zstd = self.proto.compression is not None
        self.codec = MSGPACK_ZSTD if self.zstd else MSGPACK
        self.info.compression = self.proto.compression
        self.info.resumed = how
        ctx.registry.register(self)
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._guarded, self._reader)
                nursery.start_soon(self._guarded, self._writer, initial, start_seq)
                nursery.start_soon(self._guarded, self._pinger)
        finally:
            ctx.registry.unregister(self)

    def _bind_metrics(self, syncer: str) -> None:
        # Label lookups cost a few microseconds each; a busy writer did several per write.
        self._m_non_block = metrics.breadcrumb_non_block.labels(syncer)
        self._m_block = metrics.breadcrumb_block.labels(syncer)
        self._m_bytes = metrics.bytes_sent.labels(syncer)
        self._m_write_latency = metrics.client_write_latency_secs.labels(syncer)
        self._m_next_latency = metrics.next_breadcrumb_latency_secs.labels(syncer)
        self._m_kvs_per_msg = metrics.kvs_per_msg.labels(syncer)

    def _accept(self, hello: ClientHello, *, resumed: bool, resume_seq: int | None = None) -> bytes:
        return self.proto.accept(
            hello,
            server_version=self.ctx.server_version,
            epoch=self.ctx.epoch,
            conn_id=self.info.conn_id,
            resumed=resumed,
            resume_seq=resume_seq,
        )

    async def _wait_for_revision(self, hello: ClientHello, timeout: float = 3.0) -> None:
        """A client coming from a replica that is slightly ahead of us: wait a little for our
        watch to reach its revision rather than send it a snapshot (the Kubernetes watch cache
        waits up to 3 s for a "too large" resourceVersion the same way)."""
        token = hello.resume
        view = self.view
        assert view is not None and self.syncer is not None
        if token is None or token.revision is None or token.epoch == self.ctx.epoch:
            return
        if view.revision is None or token.revision <= view.revision:
            return
        with trio.move_on_after(timeout):
            while view.revision is None or view.revision < token.revision:
                await self.ctx.wait_for_crumb(self.syncer, view.head_seq)

    def _plan_start(self, hello: ClientHello) -> tuple[int | None, str]:
        """Resume position (a sequence number) if the client can skip the snapshot."""
        token = hello.resume
        view = self.view
        assert view is not None
        if token is None or FEATURE_RESUME not in hello.features:
            return None, ""
        catchup = FEATURE_CATCHUP in hello.features
        refused = ""
        if token.epoch == self.ctx.epoch:
            if view.can_resume_from_seq(token.seq):
                return token.seq, "seq"
            if catchup and view.can_catch_up_from_seq(token.seq):
                # Anyone who knows the epoch can ask for this: it is granted only when it is
                # cheaper than the shared snapshot (typha/cache/catchup.py).
                zstd = COMPRESSION_ZSTD in hello.compressions
                catchups = self.ctx.catchups[self.syncer]  # type: ignore[index]
                ok, refused = catchups.admit(token.seq, zstd)
                if ok:
                    return token.seq, "catchup"
        if token.revision is not None:
            seq = view.seq_for_revision(token.revision)
            if seq is not None:
                return seq, "revision"
        if refused:
            metrics.catchups_refused.labels(str(self.syncer)).inc()
            self.log.info("snapshot instead of a catch-up", since=token.seq, reason=refused)
        return None, ""

    # --- Writer ----------------------------------------------------------------------------------

    async def _writer(self, initial: bytes, start_seq: int | None) -> None:
        view = self.view
        assert view is not None
        # The start runs in a frame of its own: a local here would keep the snapshot (and so
        # every snapshot generation of a join storm) alive for as long as the client stays.
        await self._start(initial, start_seq)
        del initial
        self.streaming = True
        while True:
            if self.pending is not None:
                data, self.pending = self.pending, None
                await self._write(data)
                continue
            if self.control:
                data = b"".join(self.control)
                self.control.clear()
                await self._write(data)
                # Only once the Goodbye itself is out: close() may have queued it while that
                # write yielded, after ``data`` had been taken from the queue.
                if self.closing and not self.control:
                    raise ConnectionClosed("goodbye sent")
                continue
            if self.next_seq <= self._write_limit() and not self.closing:
                self._m_non_block.inc()
                parts = self._gather(self._write_limit())
                if parts is _CATCH_UP:
                    parts = await self._catchup(self.next_seq - 1)
                if parts is None:
                    self.close("fell behind the retained history; reconnect for a snapshot")
                    continue
                await self._write(parts)
                continue
            if self._send_status_after_gather:
                self._send_status_after_gather = False
                await self._write(frame(encode_payload(SyncStatusMsg(view.status))))
                continue
            # Idle: the shared fan-out may now write for us (plain TCP only: a TLS stream has
            # no raw fast path, so its writer keeps the token). ``wake`` takes it back.
            self.end_grace()  # caught up
            data = parts = None  # nor the last write's shared buffers, while it waits
            self._m_block.inc()
            if self.transport.direct:
                self.write_token.release(WRITER)
            await self._wake.wait()
            self._wake = trio.Event()
            if self.write_token.free:  # woken before it released: nobody took it since
                self.write_token.take(WRITER)

    async def _start(self, initial: bytes, start_seq: int | None) -> None:
        """The accept, then the shared snapshot or (resuming) nothing more: the breadcrumbs
        follow from ``next_seq``."""
        assert self.syncer is not None
        syncer = str(self.syncer)
        if start_seq is None:
            started = time.monotonic()
            snap = await self.ctx.snapshots[self.syncer].get()
            self.hold_history(snap.seq)
            # Two buffers, one writev: the shared snapshot is never copied per client.
            await self._write([initial, await self.codec.snapshot_bytes(snap)])
            self.next_seq = snap.seq + 1
            self._after_snapshot = SnapshotTails(snap.seq, snap.tails)
            self.start_grace()
            metrics.client_snapshot_send_secs.labels(syncer).observe(time.monotonic() - started)
            self.log.info("snapshot sent", seq=snap.seq, kvs=snap.n_kvs)
        else:
            metrics.resumes_served.labels(syncer, self.info.resumed).inc()
            self.log.info("resuming", from_seq=start_seq, how=self.info.resumed)
            await self._write(initial)
            self.next_seq = start_seq + 1
            self._send_status_after_gather = True

    def _write_limit(self) -> int:
        """The last breadcrumb this connection's writer writes itself: up to the fan-out's
        mark on plain TCP (the breadcrumbs after it go out in the fan-out's next run, one
        coalesced write, see ``fanout.FanOutMark``); the head on TLS (no fast path), without
        a fan-out, and while a resumed client is replayed (its status follows the replay)."""
        view = self.view
        assert view is not None
        head = view.head_seq
        if not self.transport.direct or self._send_status_after_gather:
            return head
        mark = self.ctx.fanout_marks.get(self.syncer)  # type: ignore[arg-type]
        return head if mark is None else min(mark.seq, head)

    # --- Grace period after a snapshot (ServerNewClientFallBehindGracePeriod) --------------------

    def hold_history(self, seq: int) -> None:
        """From the snapshot at ``seq`` until the client first catches up, keep its position
        in the history however old it gets, for the grace period once the snapshot is sent
        (Typha: a new client may fall further behind than ServerMaxFallBehindSecs that long)."""
        assert self.view is not None
        self._grace = self.view.hold_history(seq, on_used=self._grace_used)

    def start_grace(self) -> None:
        if self._grace is not None and self.view is not None:
            self._grace.until = self.view.clock() + self.settings.new_client_grace

    def end_grace(self) -> None:
        if self._grace is not None and self.view is not None:
            self.view.release(self._grace)
        self._grace = None

    def _grace_used(self) -> None:
        metrics.connections_grace_used.labels(str(self.syncer)).inc()
        self.log.warning(
            "client is far behind after its snapshot; allowing the grace period to catch up",
            grace_secs=self.settings.new_client_grace,
        )

    def _gather(self, upto: int) -> list[bytes] | None:
        """Frames that bring the client from ``next_seq`` towards ``upto``: the breadcrumbs'
        shared frame buffers, in order (written with one writev, not joined)."""
        view = self.view
        assert view is not None and self.syncer is not None
        last = self.next_seq - 1
        snap, self._after_snapshot = self._after_snapshot, None
        if view.can_resume_from_seq(last):
            started = time.monotonic()
            parts: list[bytes] = []
            size = 0
            kvs = 0
            # Right after the shared snapshot, every joiner of that snapshot needs the same
            # breadcrumbs: joined once, then extended by each later joiner (``Snapshot.tails``),
            # instead of each one gathering hundreds of them (a connect storm's largest cost).
            sharing = snap is not None and snap.seq == last
            if snap is not None and sharing:
                tail = snap.tails.get(self.codec.key)
                # (Its end must still be in the history, for the breadcrumbs after it.)
                if tail is not None and view.can_resume_from_seq(tail[0]):
                    last, joined, kvs = tail
                    parts.append(joined)
                    size = len(joined)
                    self.next_seq = last + 1
            crumb_bytes = self.codec.crumb_bytes
            for crumb in view.crumbs_after(last):
                if crumb.seq > upto:
                    break
                part = crumb_bytes(crumb)
                parts.append(part)
                size += len(part)
                kvs += len(crumb.kv_bytes)
                self.next_seq = crumb.seq + 1
                if size >= _GATHER_LIMIT:
                    sharing = False
                    break
            if snap is not None and sharing and len(parts) > 1:
                parts = [b"".join(parts)]
                snap.tails[self.codec.key] = (self.next_seq - 1, parts[0], kvs)
            self._m_next_latency.observe(time.monotonic() - started)
            self._m_kvs_per_msg.observe(kvs)
            return parts
        if FEATURE_CATCHUP in self.proto.features and view.can_catch_up_from_seq(last):
            return _CATCH_UP
        return None  # fell behind both the history and the tombstones

    async def _catchup(self, since: int) -> list[bytes] | None:
        """A shared conflated catch-up covering ``since`` (built off the event loop, once for
        every client it covers: typha/cache/catchup.py); None if it is too late for one."""
        assert self.syncer is not None
        catchup = await self.ctx.catchups[self.syncer].get(since, self.zstd)
        if catchup is None:
            return None
        # It may have been built from an older position (a superset) and up to a head older
        # than ours: the writer follows the breadcrumbs after it.
        self.next_seq = catchup.seq + 1
        metrics.catchups_served.labels(str(self.syncer)).inc()
        self.log.info(
            "conflated catch-up",
            since=since,
            built_since=catchup.since,
            head=catchup.seq,
            kvs=catchup.n_kvs,
        )
        return [catchup.data]

    async def _write(self, data: bytes | memoryview | list[bytes]) -> None:
        """Write everything (a list goes out with writev, without joining it first)."""
        if not data:
            return
        started = time.monotonic()
        timeout = self.settings.write_timeout
        try:
            if isinstance(data, list):
                n = await self.transport.write_all_vec(data, timeout)
            else:
                n = await self.transport.write_all(data, timeout)
        except WriteTimeout as exc:
            raise ConnectionClosed(f"write timeout: {exc}") from None
        self.info.bytes_sent += n
        self._m_bytes.inc(n)
        self._m_write_latency.observe(time.monotonic() - started)

    def try_fast_write(self, first_seq: int, last_seq: int, data: bytes) -> int:
        """Called by the shared fan-out. Writes ``data`` (the frames of breadcrumbs
        ``first_seq..last_seq``) directly if this client is caught up and idle.

        Returns the bytes written now (the writer task finishes a short write), or -1 if the
        client is not on the fast path and must follow on its own.
        """
        token = self.write_token
        if token.holder is not None or self.next_seq != first_seq:
            return -1
        # take/release rather than ``token.hold``: a context manager costs more than the write.
        token.take(FANOUT)
        try:
            n = self.transport.write_nowait(data)
        except OSError:
            token.release(FANOUT)
            self.abort("write failed")
            return 0
        token.release(FANOUT)
        self.next_seq = last_seq + 1
        self.info.bytes_sent += n
        if n < len(data):
            self.pending = memoryview(data)[n:]
            self.wake()
        return n

    def try_fast_catch_up(self, last_seq: int, parts: list[bytes]) -> int:
        """Called by the shared fan-out for an idle client that is a few breadcrumbs behind:
        ``parts`` are the shared frames of breadcrumbs ``next_seq..last_seq``, written with one
        writev instead of waking this client's writer task (which, for hundreds of clients
        that hiccuped at once, costs more than the writes and keeps them behind).

        Returns the bytes written now, or -1 if the client must follow on its own.
        """
        token = self.write_token
        if token.holder is not None:
            return -1
        token.take(FANOUT)
        try:
            n = self.transport.write_nowait_vec(parts)  # type: ignore[union-attr]
        except OSError:
            token.release(FANOUT)
            self.abort("write failed")
            return 0
        token.release(FANOUT)
        self.next_seq = last_seq + 1
        self.info.bytes_sent += n
        total = sum(len(p) for p in parts)
        if n < total:
            # Rare: the copy is made only for the part the kernel did not take.
            self.pending = memoryview(b"".join(parts))[n:]
            self.wake()
        return n

    def wake(self) -> None:
        """Hand the socket back to the writer task (if nobody holds it) and wake it."""
        if self.write_token.free:
            self.write_token.take(WRITER)
        self._wake.set()

    def _stop_fast_path(self) -> None:
        # The fan-out must never write to a connection being torn down (its fd may be reused).
        self.write_token.close()

    # --- Reader and pinger -----------------------------------------------------------------------

    async def _reader(self) -> None:
        syncer = str(self.syncer)
        proto = self.proto
        while True:
            # Frames that came in the same read as the hello are already buffered: handle
            # them first, not once more bytes happen to arrive.
            while (event := proto.next_event()) is not None:
                assert isinstance(event, Pong)
                self._on_pong(event, syncer)
            data = await self.transport.receive_some(65536)
            if not data:
                raise ConnectionClosed("client closed the connection")
            proto.receive_data(data)

    def _on_pong(self, pong: Pong, syncer: str) -> None:
        # A client can only have applied what was sent to it; a higher seq would show it as
        # caught up (lag 0) whatever it really holds.
        sent = self.next_seq - 1
        if not -1 <= pong.seq <= sent:
            raise UnexpectedMessage(
                f"Pong acknowledges seq {pong.seq}, but the last seq sent is {sent}"
            )
        now = time.monotonic()
        self._last_pong = now
        if pong.seq > self.info.acked_seq:
            self.info.acked_seq = pong.seq
        self.info.acked_at = time.time()
        rtt = now - pong.ping_timestamp / 1e9
        if 0 <= rtt < 3600:
            metrics.ping_latency.labels(syncer).observe(rtt)

    async def _pinger(self) -> None:
        interval = self.settings.ping_interval
        timeout = self.settings.pong_timeout
        while True:
            await trio.sleep(interval * random.uniform(0.9, 1.1))
            if time.monotonic() - self._last_pong > timeout:
                self.close(f"no pong for {timeout:g}s")
                return
            self.enqueue(self.proto.send(Ping(time.monotonic_ns())))

    def enqueue(self, data: bytes) -> None:
        if self.closing:
            return  # nothing follows a Goodbye (a ping could still be queued after it)
        self.control.append(data)
        self.wake()

    # --- Closing ---------------------------------------------------------------------------------

    def close(
        self, reason: str, *, reconnect_delay: float | None = None, address: str | None = None
    ) -> None:
        """End the connection, with a Goodbye first where the client understands it."""
        if self.closing:
            return
        self.log.info("closing connection", reason=reason)
        # Once the handshake is done the writer owns the socket: a Goodbye queued now goes out
        # right after whatever it is writing (even the initial snapshot), so a client that has
        # just connected is told too, instead of seeing a reset.
        if FEATURE_GOODBYE in self.proto.features and self.registered:
            self.enqueue(self.proto.send(Goodbye(reason, reconnect_delay, address)))
            self.closing = True
            # If the goodbye cannot be written promptly, give up on it.
            if self._cancel is not None:
                self._cancel.deadline = min(self._cancel.deadline, trio.current_time() + 5.0)
        else:
            self.abort(reason)

    def abort(self, reason: str) -> None:
        self.closing = True
        self._stop_fast_path()
        if self._cancel is not None and not self._cancel.cancel_called:
            self.log.debug("aborting", reason=reason)
            self._cancel.cancel()
