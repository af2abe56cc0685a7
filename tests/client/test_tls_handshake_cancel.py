"""A client cancelled in the middle of its TLS handshake closes its socket at once. It used to
leave it open until the collector found it: an "unclosed socket" ResourceWarning, a failure
under -W error, seen as a flaky failure of whichever test was running at that moment."""

from __future__ import annotations

import functools
import ssl

import trio

from felix_client.sync_client import SyncClient


async def test_cancel_mid_handshake_closes_the_socket() -> None:
    hello = trio.Event()  # the client's ClientHello arrived: it is mid-handshake
    closed = trio.Event()  # then its end of the connection was closed

    async def hold(stream: trio.SocketStream) -> None:
        # Accepts TCP, reads the ClientHello, never answers; notices the client's close.
        while data := await stream.receive_some():
            if data:
                hello.set()
        closed.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        client = SyncClient(
            [f"127.0.0.1:{port}"], "node-1", ssl_context=ssl.create_default_context()
        )
        with trio.move_on_after(0.3):
            await client.run()
        assert hello.is_set(), "the client reached the handshake (so it was cancelled in it)"
        with trio.move_on_after(2):
            await closed.wait()
        assert closed.is_set(), "the cancelled client left its socket open"
        nursery.cancel_scope.cancel()
