"""gRPC calls over one HTTP/2 connection, on trio: plaintext (h2c with prior knowledge) or TLS
(``trio.SSLStream``, HTTP/2 agreed by ALPN "h2" as gRPC requires).

There is no maintained trio-native gRPC library; grpcio would need a thread bridged to trio
(measured slower, docs/dependencies.md). This speaks gRPC's wire format itself: the ``h2`` state
machine for HTTP/2, messages framed as a 1-byte flag plus a 4-byte length, the status in the
``grpc-status`` trailer. Only what etcd's KV, Watch and Maintenance calls need: unary calls and
the server-streaming side of a bidirectional call, with request metadata (etcd's auth
``token``); no compression.

No background task of its own: whichever task waits for something (a reply, a message,
flow-control window) reads the socket, one task at a time under a lock, and hands every frame to
the call it belongs to. So a slow consumer of a stream pushes back on the server through TCP and
HTTP/2 flow control (etcd then treats the watcher as slow, as it does a slow gateway client)
instead of buffering without bound here. A connection that only carries unary calls (whose
replies are read whole) may also be read between calls by a task its owner runs
(:meth:`GrpcConnection.read_until_done`): then a server that stops sees its PING answered and
the connection closed after its GOAWAY at once, instead of waiting seconds for an idle client.
"""

from __future__ import annotations

import contextlib
import math
import select
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

# gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
OK = 0
CANCELLED = 1
UNKNOWN = 2
RESOURCE_EXHAUSTED = 8
OUT_OF_RANGE = 11
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# Large receive windows: a list page or a watch replay (one message of 10-15 MB for 20k events)
# arrives without a WINDOW_UPDATE round trip per 64 KiB. Memory stays bounded by what the
# socket holds, because data is only read when a caller waits for it.
WINDOW = 16 * 1024 * 1024
_RECV_CHUNK = 1 << 18
_CHECK_READ_TIMEOUT = 0.05
_SERVER_PREFACE_WAIT = 1.0


class GrpcError(Exception):
    """A call ended with a non-OK gRPC status (or the connection under it failed:
    ``UNAVAILABLE``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"grpc-status {status}: {message}")
        self.status = status
        self.message = message


@dataclass(eq=False)
class _Call:
    stream_id: int
    messages: deque[bytes] = field(default_factory=deque)
    buffer: bytearray = field(default_factory=bytearray)
    ended: bool = False
    error: GrpcError | None = None

    def feed(self, data: bytes) -> None:
        """Append DATA; every complete message (flag, length, body) goes to ``messages``."""
        buf = self.buffer
        buf += data
        start = 0
        while len(buf) - start >= 5:
            length = int.from_bytes(buf[start + 1 : start + 5], "big")
            if len(buf) - start - 5 < length:
                break
            if buf[start]:
                raise GrpcError(INTERNAL, "compressed message received but none negotiated")
            self.messages.append(bytes(buf[start + 5 : start + 5 + length]))
            start += 5 + length
        if start:
            del buf[:start]

    def end(self, error: GrpcError | None) -> None:
        if not self.ended:
            self.ended = True
            self.error = error


Metadata = Sequence[tuple[bytes, bytes]]
"""Request headers a call adds (gRPC metadata), e.g. ``[(b"token", b"...")]``."""


def h2_tls_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` set to offer HTTP/2 alone by ALPN (gRPC over TLS requires it)."""
    context.set_alpn_protocols(["h2"])
    return context


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and of each cause under it that says more (trio's
    BrokenResourceError around an SSL error has no message of its own)."""
    parts = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 4:
        text = str(cause)
        parts.append(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return ": ".join(parts)


def frame(message: bytes) -> bytes:
    """One gRPC message on the wire: uncompressed flag, big-endian length, body."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def _status_error(headers: dict[bytes, bytes]) -> GrpcError | None:
    """None for grpc-status 0, else the error the headers or trailers describe."""
    status = headers.get(b"grpc-status")
    if status is None:
        return GrpcError(INTERNAL, "call ended without grpc-status")
    if status == b"0":
        return None
    # Percent-encoded on the wire (gRPC's HTTP/2 protocol spec).
    message = unquote(headers.get(b"grpc-message", b"").decode("utf-8", "replace"))
    try:
        code = int(status)
    except ValueError:
        code = UNKNOWN
    return GrpcError(code, message)


class GrpcConnection:
    """One HTTP/2 connection to a gRPC server; see the module doc for who reads it.

    ``await GrpcConnection.connect(host, port)``; ``await conn.unary(path, request)`` or
    ``conn.stream(path, request)`` for a server stream; ``await conn.aclose()``.
    """

    def __init__(self, stream: trio.abc.Stream, authority: str, *, tls: bool = False) -> None:
        self._stream = stream
        self._authority = authority.encode()
        self._scheme = b"https" if tls else b"http"
        # The socket under the TLS layer, if any: what `check` polls.
        self._socket = getattr(getattr(stream, "transport_stream", stream), "socket", None)
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._calls: dict[int, _Call] = {}
        self._send_lock = trio.Lock()
        self._recv_lock = trio.Lock()
        self.broken: str | None = None
        """Why the connection cannot carry calls any more (None while it can)."""
        self.going_away = False
        """The server sent GOAWAY: calls in progress may finish, new ones must go elsewhere."""
        self._server_settings = False

    @classmethod
    async def connect(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> GrpcConnection:
        """Open the TCP connection (and TLS over it with ``ssl_context``, whose ALPN protocols
        must be ["h2"]: :func:`h2_tls_context`) and send HTTP/2's preface and settings (bound
        it with a trio timeout: connecting has none of its own). A failed TLS handshake or a
        server that does not agree to HTTP/2 raises :class:`GrpcError` UNAVAILABLE saying so."""
        authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        tcp = await trio.open_tcp_stream(host, port)
        stream: trio.abc.Stream = tcp
        if ssl_context is not None:
            tls = trio.SSLStream(tcp, ssl_context, server_hostname=host)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                await trio.aclose_forcefully(tcp)
                raise GrpcError(
                    UNAVAILABLE, f"TLS handshake with {authority} failed: {describe(exc)}"
                ) from exc
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            if tls.selected_alpn_protocol() != "h2":
                await trio.aclose_forcefully(tls)
                raise GrpcError(
                    UNAVAILABLE,
                    f"{authority} did not agree to HTTP/2 over TLS "
                    f"(ALPN: {tls.selected_alpn_protocol()!r})",
                )
            stream = tls
        conn = cls(stream, authority, tls=ssl_context is not None)
        h2c = conn._conn
        h2c.initiate_connection()
        h2c.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        h2c.increment_flow_control_window(WINDOW - 65535)
        try:
            if ssl_context is not None:
                # Under TLS 1.3 a server that refuses our client certificate says so by an alert
                # after the handshake: read the server's preface (its SETTINGS, which it may
                # send at once) before writing, to fail with that reason, not a broken pipe.
                # Bounded, for a server that waits for ours first.
                with trio.move_on_after(_SERVER_PREFACE_WAIT):
                    await conn._pump_until(lambda: conn._server_settings)
                if conn.broken is not None:
                    raise GrpcError(UNAVAILABLE, conn.broken)
            await conn._flush()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    @property
    def usable(self) -> bool:
        return self.broken is None and not self.going_away

    async def check(self) -> bool:
        """Whether the connection can carry a new call, after reading what already waits on an
        idle connection (the server's FIN after a restart, a GOAWAY, a PING): a connection
        nobody has read for a while may be dead without us knowing yet."""
        if self.usable and not self._recv_lock.locked() and self._readable():
            async with self._recv_lock:
                # Bounded: under TLS a readable socket may hold no application data (a session
                # ticket, part of a record), and then there is nothing to wait for.
                await self._read_once(receive_timeout=_CHECK_READ_TIMEOUT)
        return self.usable

    def _readable(self) -> bool:
        sock = self._socket
        if sock is None:
            return False
        try:
            ready, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):  # closed under us
            return True
        return bool(ready)

    async def read_until_done(self) -> None:
        """Read the connection until it breaks, or until the server said GOAWAY and no call is
        left on it (then the caller should close it). For a connection of unary calls only:
        frames for a call are buffered for it whole, as its own reads would. Calls made
        meanwhile still work: each waits for the read lock and finds its reply dispatched."""
        await self._pump_until(
            lambda: self.broken is not None or (self.going_away and not self._calls)
        )

    async def aclose(self) -> None:
        self._fail("connection closed by the client")
        await trio.aclose_forcefully(self._stream)

    # -- calls --------------------------------------------------------------------------------

    async def unary(self, path: str, request: bytes, metadata: Metadata = ()) -> bytes:
        """One request, one reply (after the OK status); raises :class:`GrpcError`.
        ``metadata``: extra request headers (lower-case names)."""
        call = await self._start(path, request, metadata, end_stream=True)
        try:
            reply = await self._receive(call)
            if reply is None:
                raise GrpcError(INTERNAL, "call ended without a reply message")
            if await self._receive(call) is not None:
                raise GrpcError(INTERNAL, "more than one reply message to a unary call")
            return reply
        finally:
            self._forget(call)

    async def open_stream(self, path: str, request: bytes, metadata: Metadata = ()) -> GrpcStream:
        """Start a call with one request, its request side left open (etcd's Watch is
        bidirectional; closing our side is not needed), and return its reply stream."""
        return GrpcStream(self, await self._start(path, request, metadata, end_stream=False))

    async def _start(
        self, path: str, request: bytes, metadata: Metadata, *, end_stream: bool
    ) -> _Call:
        if not self.usable:
            raise GrpcError(UNAVAILABLE, self.broken or "the server is going away")
        h2c = self._conn
        try:
            sid = h2c.get_next_available_stream_id()
            h2c.send_headers(
                sid,
                [
                    (b":method", b"POST"),
                    (b":scheme", self._scheme),
                    (b":path", path.encode()),
                    (b":authority", self._authority),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                    (b"user-agent", b"typha-py"),
                    *metadata,
                ],
            )
        except h2.exceptions.H2Error as exc:  # e.g. no stream ids left: a new connection
            self._fail(f"cannot start a call: {exc!r}")
            raise GrpcError(UNAVAILABLE, self.broken or "cannot start a call") from exc
        call = _Call(sid)
        self._calls[sid] = call
        try:
            await self._send_data(call, frame(request), end_stream)
        except h2.exceptions.H2Error as exc:
            self._forget(call)
            raise GrpcError(INTERNAL, f"cannot send the request: {exc!r}") from exc
        except BaseException:
            self._forget(call)
            raise
        return call

    async def _send_data(self, call: _Call, data: bytes, end_stream: bool) -> None:
        """Send ``data`` as the flow-control windows allow (a large txn exceeds the 64 KiB a
        server grants at first), reading the socket for WINDOW_UPDATEs meanwhile."""
        h2c = self._conn
        view = memoryview(data)
        while True:
            size = min(h2c.local_flow_control_window(call.stream_id), h2c.max_outbound_frame_size)
            if size > 0 or not view:
                chunk, view = view[:size], view[size:]
                h2c.send_data(call.stream_id, bytes(chunk), end_stream=end_stream and not view)
                await self._flush()
                if not view:
                    return
                continue
            await self._pump_until(lambda: call.ended or self._window(call) > 0)
            if call.ended:
                raise call.error or GrpcError(INTERNAL, "call ended while sending its request")

    def _window(self, call: _Call) -> int:
        return self._conn.local_flow_control_window(call.stream_id)

    async def _receive(self, call: _Call) -> bytes | None:
        """The call's next message; None once it ended with OK; raises if it failed."""
        await self._pump_until(lambda: bool(call.messages) or call.ended)
        if call.messages:
            return call.messages.popleft()
        if call.error is not None:
            raise call.error
        return None

    def _forget(self, call: _Call) -> None:
        """Drop the call; if the server may still be sending, reset its stream (the RST_STREAM
        goes out with the next write on this connection)."""
        self._calls.pop(call.stream_id, None)
        if not call.ended and self.broken is None:
            call.end(GrpcError(CANCELLED, "cancelled by the client"))
            with contextlib.suppress(h2.exceptions.H2Error):  # closed on the server's side
                self._conn.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)

    # -- the socket -----------------------------------------------------------------------------

    async def _pump_until(self, done: Callable[[], bool]) -> None:
        """Read and dispatch frames until ``done()`` (or the connection breaks: then every
        call on it has ended with UNAVAILABLE)."""
        while not done():
            if self.broken is not None:
                return
            async with self._recv_lock:
                if done() or self.broken is not None:
                    return
                await self._read_once()

    async def _read_once(self, receive_timeout: float = math.inf) -> None:
        data: bytes | bytearray = b""
        try:
            with trio.move_on_after(receive_timeout) as scope:
                data = await self._stream.receive_some(_RECV_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # Under TLS the cause says why (a refused client certificate arrives as an alert
            # on the first read, after the client's side of the handshake completed).
            self._fail(f"connection broken: {describe(exc)}")
            return
        if scope.cancelled_caught:
            return
        if not data:
            self._fail("connection closed by the server")
            return
        try:
            events = self._conn.receive_data(data)
            for ev in events:
                self._dispatch(ev)
        except (h2.exceptions.H2Error, GrpcError) as exc:
            self._fail(f"HTTP/2 protocol error: {exc!r}")
            return
        await self._flush()  # window updates, PING and SETTINGS acknowledgements

    def _dispatch(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.DataReceived):
            call = self._calls.get(ev.stream_id)
            if call is not None:
                call.feed(ev.data)
            # Acknowledge at once: data is only read when someone waits for it, so the
            # socket, not this buffer, is what pushes back on the server.
            self._conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.ResponseReceived):
            headers = dict(ev.headers)
            call = self._calls.get(ev.stream_id)
            if call is None:
                return
            if headers.get(b":status") != b"200":
                status = headers.get(b":status", b"?").decode()
                call.end(GrpcError(UNAVAILABLE, f"HTTP status {status}"))
            elif b"grpc-status" in headers:  # trailers-only reply (an error, typically)
                call.end(_status_error(headers))
        elif isinstance(ev, h2.events.TrailersReceived):
            call = self._calls.get(ev.stream_id)
            if call is not None:
                call.end(_status_error(dict(ev.headers)))
        elif isinstance(ev, h2.events.StreamEnded):
            call = self._calls.get(ev.stream_id)
            if call is not None:
                call.end(GrpcError(INTERNAL, "stream ended without trailers"))
        elif isinstance(ev, h2.events.StreamReset):
            call = self._calls.get(ev.stream_id)
            if call is not None:
                code = (
                    UNAVAILABLE
                    if ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                    else (CANCELLED if ev.error_code == h2.errors.ErrorCodes.CANCEL else INTERNAL)
                )
                call.end(GrpcError(code, f"stream reset by the server ({ev.error_code!r})"))
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self._server_settings = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.going_away = True
            last = ev.last_stream_id if ev.last_stream_id is not None else 0
            for sid, call in self._calls.items():
                if sid > last:  # never processed: safe to retry elsewhere
                    call.end(GrpcError(UNAVAILABLE, "the server is going away (GOAWAY)"))

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._conn.data_to_send()
            if not data:
                return
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(f"connection broken: {describe(exc)}")
                raise GrpcError(UNAVAILABLE, self.broken or "connection broken") from exc
            except BaseException:
                # Cancelled part-way: the peer may have half a frame; the connection is unusable.
                self._fail("a write was interrupted")
                raise

    def _fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        for call in self._calls.values():
            call.end(GrpcError(UNAVAILABLE, reason))


class GrpcStream:
    """The reply side of a streaming call: ``await receive()`` gives each message, None once
    the call ended with OK, or raises :class:`GrpcError`. ``close()`` resets the stream."""

    def __init__(self, conn: GrpcConnection, call: _Call) -> None:
        self._conn = conn
        self._call = call

    async def receive(self) -> bytes | None:
        return await self._conn._receive(self._call)

    def close(self) -> None:
        self._conn._forget(self._call)
