"""A very small HTTP/1.1 server on trio + h11, for the health and status endpoints.

Each request is answered and the connection closed; handlers are plain functions returning
(status, content type, body).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
import structlog
import trio

log = structlog.get_logger(__name__)

Handler = Callable[[], tuple[int, str, bytes]]


async def _serve_one(stream: trio.SocketStream, routes: dict[str, Handler]) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        with trio.move_on_after(10):
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
        log.debug("http client error", error=str(exc))
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


async def serve_http(
    host: str, port: int, routes: dict[str, Handler], *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()[1]
    log.info("http server listening", host=host, port=bound, paths=sorted(routes))
    task_status.started(bound)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(stream, routes)

    await trio.serve_listeners(handler, listeners)
