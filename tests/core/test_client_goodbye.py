"""The sync client against a hand-driven server: a Goodbye that arrives together with a Ping
from a server that has already reset the connection is still seen."""

from __future__ import annotations

import socket
import struct

import trio

from felix_client.sync_client import SyncClient
from typha.protocol import ServerProtocol
from typha.protocol.messages import ClientHello, Goodbye, Ping, SyncStatus, SyncStatusMsg


async def serve_once(listener: trio.socket.SocketType, *, reset: bool) -> None:
    """Handshake, then Ping + Goodbye in one write; close with a reset (SO_LINGER 0) or
    gracefully."""
    sock, _ = await listener.accept()
    proto = ServerProtocol()
    with sock:
        while (hello := proto.next_event()) is None:
            proto.receive_data(await sock.recv(65536))
        assert isinstance(hello, ClientHello)
        out = proto.accept(hello, server_version="t", epoch=1, conn_id=1, resumed=False)
        out += proto.send(SyncStatusMsg(SyncStatus.IN_SYNC))
        await sock.send(out)
        await trio.sleep(0.2)  # the client is idle, waiting for data
        await sock.send(proto.send(Ping(1)) + proto.send(Goodbye("bye", 0.0, None)))
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_goodbye_after_a_ping_is_seen_even_when_the_server_resets() -> None:
    for reset in (True, False):  # a graceful close is the control
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = SyncClient([f"127.0.0.1:{port}"], "n", backoff_cap=60)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            await serve_once(listener, reset=reset)
            with trio.fail_after(5):
                while not client.stats.disconnects and not client.stats.connect_failures:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        listener.close()
        assert client.stats.goodbyes == 1, (reset, client.stats)
        assert client.stats.last_goodbye == "bye"
