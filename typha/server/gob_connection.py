"""One Calico client (Felix, confd, calico-node) speaking Calico Typha's gob protocol.

The same connection as our msgpack one (``connection.py``: writer, reader and pinger tasks,
the write token shared with the fan-out, the registry, drain and rebalancing), driving the
sans-IO ``GobServerSession`` instead (docs/protocol.md, section 8):

* the hello within ``ServerHandshakeTimeoutSecs``; before it, the bytes the session buffers
  count against the server-wide input budget (``budget.py``) as well as the session's own
  64 KiB cap;
* snappy: each decoder restart waits for the client's ACK, within the pong timeout;
* the snapshot and the breadcrumbs are the codec's shared bytes (``gob_codec.py``);
* gob has no Goodbye: closing (drain, rebalancing, a protocol error) closes the socket, and
  Calico's client reconnects.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import OrderedDict

import structlog
import trio

from typha import metrics
from typha.model.keys import SyncerType
from typha.protocol import ProtocolError
from typha.protocol.gob import (
    GobServerSession,
    GoTime,
    HelloAccepted,
    PongReceived,
    SnapshotReady,
    StreamingReady,
    ping_part,
)

from .connection import Connection, ConnectionClosed
from .context import ConnectionContext
from .gob_codec import gob_codec
from .ownership import WRITER
from .transport import Transport

log = structlog.get_logger(__name__)

# Pings whose pong may still come back, remembered with the position they were sent at.
_PINGS_REMEMBERED = 8


class GobConnection(Connection):
    def __init__(
        self,
        ctx: ConnectionContext,
        transport: Transport,
        conn_id: int,
        *,
        initial: bytes = b"",
        handshake_deadline: float | None = None,
    ) -> None:
        super().__init__(ctx, transport, conn_id, handshake_deadline=handshake_deadline)
        self.session = GobServerSession(
            server_version=ctx.server_version,
            conn_id=conn_id & 0xFFFF_FFFF_FFFF_FFFF,
            syncer_types=[str(s) for s in ctx.views],
        )
        self._initial = initial
        self._snappy = False
        self._pings: OrderedDict[int, int] = OrderedDict()  # ping unix nanos -> position
        self.info.client_version = "gob"

    # --- Lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        budget = self.ctx.input_budget
        try:
            with trio.move_on_at(self._handshake_deadline()) as hs_scope:
                accepted = await self._read_until(HelloAccepted)
            if hs_scope.cancelled_caught:
                self.log.info("handshake timed out")
                return
            if accepted is not None:
                assert isinstance(accepted, HelloAccepted)
                budget.release(self)  # no longer unauthenticated
                await self._serve_gob(accepted)
        except ProtocolError as exc:
            # Go Typha closes without a ServerHello (there is no way to say why).
            metrics.protocol_errors.labels(type(exc).__name__).inc()
            self.log.warning("gob protocol error", reason=exc.reason)
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
            self.session.discard_input()  # freed before the budget counts it as gone
            budget.release(self)

    async def _read_until(self, kind: type) -> object | None:
        """Read until the session yields an event of ``kind`` (None on EOF). While the hello
        is outstanding the buffered bytes are charged to the server's input budget."""
        session = self.session
        budget = self.ctx.input_budget
        data, self._initial = self._initial, b""
        while True:
            if data:
                session.receive_data(data)
                if self.syncer is None and not budget.charge(self, session.buffered):
                    raise ConnectionClosed("server-wide unauthenticated input budget exhausted")
                data = b""  # the decoder keeps its own copy (see Connection._read_hello)
            event = session.next_event()
            if event is not None:
                if not isinstance(event, kind):
                    raise ConnectionClosed(f"unexpected {type(event).__name__}")
                return event
            data = await self.transport.receive_some(65536)
            if not data:
                return None

    async def _serve_gob(self, accepted: HelloAccepted) -> None:
        ctx = self.ctx
        syncer = SyncerType(accepted.syncer_type)
        self.syncer = syncer
        self.view = ctx.views[syncer]
        self._bind_metrics(str(syncer))
        hello = accepted.hello
        # The session refused hello strings over 1 KiB (hello_limits.py).
        self.info.node, self.info.syncer = hello.hostname, str(syncer)
        self.info.client_version = f"gob {hello.version}"
        self.info.compression = accepted.compression or None
        self._snappy = bool(accepted.compression)
        self.codec = gob_codec(self._snappy, ctx.max_kvs_per_message, ctx.v3_resource_versions)
        self.log = self.log.bind(node=self.info.node, syncer=str(syncer), protocol="gob")
        ctx.registry.register(self)
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._guarded, self._handshake_then_stream)
        finally:
            ctx.registry.unregister(self)

    async def _handshake_then_stream(self) -> None:
        """ServerHello, (ACK), snapshot, (ACK), then the reader, writer and pinger."""
        # In a frame of its own, which ends: the snapshot must not stay referenced from this
        # one, which lives as long as the connection (every snapshot generation of a join
        # storm stayed alive as long as its joiners).
        await self._handshake_and_snapshot()
        self._last_pong = time.monotonic()  # pings start now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._guarded, self._reader)
            nursery.start_soon(self._guarded, self._gob_writer)
            nursery.start_soon(self._guarded, self._pinger)

    async def _handshake_and_snapshot(self) -> None:
        session = self.session
        await self._write(session.data_to_send())
        if session.compression:
            await self._await_ack(SnapshotReady)
        else:
            # Plain: the session queued SnapshotReady right behind HelloAccepted.
            ready = session.next_event()
            assert isinstance(ready, SnapshotReady), ready
        assert self.syncer is not None and self.view is not None
        started = time.monotonic()
        snap = await self.ctx.snapshots[self.syncer].get()
        self.hold_history(snap.seq)
        data = await self.codec.snapshot_bytes(snap)
        session.send_snapshot(())
        head = session.data_to_send()  # snappy: the new stream's identifier and preamble
        events = session.end_snapshot()
        # The shared snapshot bytes between the session's own (after them, for snappy, the
        # end-of-snapshot restart): one writev, no per-client copy.
        await self._write([*head, data, *session.data_to_send()])
        self.next_seq = snap.seq + 1
        self.start_grace()
        metrics.client_snapshot_send_secs.labels(str(self.syncer)).observe(
            time.monotonic() - started
        )
        self.log.info("snapshot sent", seq=snap.seq, kvs=snap.n_kvs)
        if not events:
            await self._await_ack(StreamingReady)
        else:
            assert isinstance(events[0], StreamingReady)
        await self._write(session.data_to_send())  # the new snappy stream's preamble

    async def _await_ack(self, kind: type) -> None:
        timeout = self.settings.pong_timeout
        with trio.move_on_after(timeout) as scope:
            event = await self._read_until(kind)
        if scope.cancelled_caught:
            raise ConnectionClosed(f"no ACK for {timeout:g}s")
        if event is None:
            raise ConnectionClosed("client closed the connection")

    # --- Writer, reader, pinger --------------------------------------------------------------

    async def _gob_writer(self) -> None:
        view = self.view
        assert view is not None
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
                continue
            if self.next_seq <= self._write_limit() and not self.closing:
                self._m_non_block.inc()
                parts = self._gather(self._write_limit())
                if parts is None:
                    # gob has no conflated catch-up: a new connection gets a snapshot.
                    raise ConnectionClosed("fell behind the retained history")
                await self._write(parts)
                continue
            self.end_grace()  # caught up
            data = parts = None  # the last write's shared buffers are not held while idle
            self._m_block.inc()
            if self.transport.direct:
                self.write_token.release(WRITER)
            await self._wake.wait()
            self._wake = trio.Event()
            if self.write_token.free:
                self.write_token.take(WRITER)

    async def _reader(self) -> None:
        syncer = str(self.syncer)
        session = self.session
        while True:
            # Messages that came in the same read as the hello (or an ACK) are already
            # buffered: handle them first, not once more bytes happen to arrive.
            while (event := session.next_event()) is not None:
                if not isinstance(event, PongReceived):
                    raise ConnectionClosed(f"unexpected {type(event).__name__}")
                now = time.monotonic()
                self._last_pong = now
                self.info.acked_at = time.time()
                sent = event.pong.ping_timestamp
                if sent is None:
                    continue
                seq = self._pings.pop(sent.unix_nanos, None)
                if seq is not None and seq > self.info.acked_seq:
                    self.info.acked_seq = seq
                rtt = time.time() - sent.unix_nanos / 1e9
                if 0 <= rtt < 3600:
                    metrics.ping_latency.labels(syncer).observe(rtt)
            data = await self.transport.receive_some(65536)
            if not data:
                raise ConnectionClosed("client closed the connection")
            session.receive_data(data)

    async def _pinger(self) -> None:
        interval = self.settings.ping_interval
        timeout = self.settings.pong_timeout
        while True:
            await trio.sleep(interval * random.uniform(0.9, 1.1))
            if time.monotonic() - self._last_pong > timeout:
                raise ConnectionClosed(f"no pong for {timeout:g}s")
            now = time.time_ns()
            self._pings[now] = self.next_seq - 1
            while len(self._pings) > _PINGS_REMEMBERED:
                self._pings.popitem(last=False)
            part = ping_part(GoTime(now))
            self.enqueue(part.snappy if self._snappy else part.plain)

    # --- Closing -----------------------------------------------------------------------------

    def close(
        self, reason: str, *, reconnect_delay: float | None = None, address: str | None = None
    ) -> None:
        """gob has no Goodbye: close the socket (Calico's client reconnects)."""
        if self.closing:
            return
        self.log.info("closing connection", reason=reason)
        self.abort(reason)
