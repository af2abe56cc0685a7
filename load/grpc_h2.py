"""A minimal gRPC client on trio: one HTTP/2 connection (the pure-Python ``h2`` state machine)
carrying length-prefixed protobuf messages, for the gateway-vs-gRPC benchmark's third variant.

Only what etcd's Range and Watch need: plaintext (h2c with prior knowledge), unary calls and
server-streaming reads of a bidirectional call, gRPC status from the trailers. No TLS, no
deadlines on the wire, no compression, no retries: a measuring tool, not a product client.
"""

from __future__ import annotations

import math

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import trio

from load.grpc_framing import GrpcCall, GrpcError, frame

WINDOW = 16 * 1024 * 1024  # large flow-control windows: fewer WINDOW_UPDATE round trips


class GrpcH2Channel:
    """``await GrpcH2Channel.open(nursery, host, port)``: one connection, read by a task in
    ``nursery``, that every call shares."""

    def __init__(self, stream: trio.SocketStream, authority: str) -> None:
        self._stream = stream
        self._authority = authority
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._send_lock = trio.Lock()
        self._calls: dict[int, GrpcCall] = {}
        self._nursery: trio.Nursery | None = None

    @classmethod
    async def open(cls, nursery: trio.Nursery, host: str, port: int) -> GrpcH2Channel:
        stream = await trio.open_tcp_stream(host, port)
        channel = cls(stream, f"{host}:{port}")
        conn = channel._conn
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        conn.increment_flow_control_window(WINDOW - 65535)
        await channel._flush()
        nursery.start_soon(channel._read_loop)
        channel._nursery = nursery
        return channel

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._conn.data_to_send()
            if data:
                await self._stream.send_all(data)

    async def _read_loop(self) -> None:
        conn = self._conn
        try:
            while data := await self._stream.receive_some(1 << 18):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        call = self._calls.get(ev.stream_id)
                        if call is not None:
                            call.feed(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        self._check_status(ev.stream_id, dict(ev.headers))
                    elif isinstance(ev, h2.events.StreamEnded):
                        self._end(ev.stream_id, None)
                    elif isinstance(ev, h2.events.StreamReset):
                        self._end(ev.stream_id, GrpcError(1, f"stream reset ({ev.error_code})"))
                await self._flush()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        for sid in list(self._calls):
            self._end(sid, GrpcError(14, "connection closed"))

    def _check_status(self, sid: int, headers: dict[bytes, bytes]) -> None:
        status = headers.get(b"grpc-status")
        if status is not None and status != b"0":
            msg = headers.get(b"grpc-message", b"").decode("utf-8", "replace")
            self._end(sid, GrpcError(int(status), msg))

    def _end(self, sid: int, error: BaseException | None) -> None:
        call = self._calls.pop(sid, None)
        if call is None:
            return
        if error is not None:
            call.send.send_nowait(error)
        call.send.close()

    async def start_call(self, path: str, request: bytes, *, end_stream: bool) -> GrpcCall:
        send, receive = trio.open_memory_channel[bytes | BaseException](math.inf)
        call = GrpcCall(send, receive)
        conn = self._conn
        sid = conn.get_next_available_stream_id()
        call.stream_id = sid
        self._calls[sid] = call
        conn.send_headers(
            sid,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", self._authority.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ],
        )
        conn.send_data(sid, frame(request), end_stream=end_stream)
        await self._flush()
        return call

    async def cancel_call(self, call: GrpcCall) -> None:
        """Reset the call's stream (gRPC's cancel: RST_STREAM with CANCEL)."""
        if self._calls.pop(call.stream_id, None) is not None:
            call.send.close()
            self._conn.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
            await self._flush()

    async def unary(self, path: str, request: bytes) -> bytes:
        call = await self.start_call(path, request, end_stream=True)
        reply: bytes | None = None
        async for item in call.receive:
            if isinstance(item, BaseException):
                raise item
            reply = item
        if reply is None:
            raise GrpcError(2, "no reply message")
        return reply
