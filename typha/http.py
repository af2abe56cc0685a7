"""A very small HTTP/1.1 server on trio + h11, for the health, status and metrics endpoints.

Each request is answered and the connection closed; handlers are plain functions returning
(status, content type, body). Bounded: a connection (TLS handshake included) gets
``timeout`` seconds in all, and at most ``max_connections`` are open at once: a new one beyond
that closes the *oldest* (which, with requests answered in milliseconds, is an idle or slow
one), so idle clients cost a small task each, never more than the cap, and cannot lock a real
scrape out.
"""

from __future__ import annotations

import collections
import itertools
import ssl
from collections.abc import Callable
from typing import Any

import h11
import structlog
import trio

from typha.tls import tls_error_text

log = structlog.get_logger(__name__)

Handler = Callable[[], tuple[int, str, bytes]]


DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64


async def _serve_one(
    stream: trio.abc.Stream, routes: dict[str, Handler], timeout: float = DEFAULT_TIMEOUT
) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        with trio.move_on_after(timeout):
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode("latin-1").split("?", 1)[0]
                    handler = routes.get(target)
                    if handler is None:
                        status, ctype, body = 404, "text/plain", b"not found\n"
                    else:
                        status, ctype, body = handler()
                    headers = [
                        ("content-type", ctype),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ]
                    out = conn.send(h11.Response(status_code=status, headers=headers))
                    if event.method != b"HEAD":
                        out += conn.send(h11.Data(data=body))
                    out += conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    return
                return
    except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError) as exc:
        log.debug("http client error", error=tls_error_text(exc))
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


async def serve_http(
    host: str,
    port: int,
    routes: dict[str, Handler],
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout: float = DEFAULT_TIMEOUT,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()[1]
    log.info(
        "http server listening", host=host, port=bound, paths=sorted(routes), tls=bool(ssl_context)
    )
    task_status.started(bound)
    active: collections.OrderedDict[int, trio.CancelScope] = collections.OrderedDict()
    ids = itertools.count()

    async def handler(stream: trio.SocketStream) -> None:
        if len(active) >= max_connections:
            _, oldest = active.popitem(last=False)
            oldest.cancel()  # it closes its own stream
        me = next(ids)
        with trio.CancelScope() as scope:
            active[me] = scope
            try:
                if ssl_context is not None:
                    stream_: trio.abc.Stream = trio.SSLStream(stream, ssl_context, server_side=True)
                else:
                    stream_ = stream
                await _serve_one(stream_, routes, timeout)
            finally:
                active.pop(me, None)

    await trio.serve_listeners(handler, listeners)
