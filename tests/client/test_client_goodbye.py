"""The sync client when a server goes away: a Goodbye that arrives together with a Ping from a
server that has already reset the connection is still seen; a reset stream is a disconnect."""

from __future__ import annotations

import socket
import struct

import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import run_typha, wait_until, wep
from typha.protocol import ServerProtocol
from typha.protocol.messages import ClientHello, Goodbye, Ping, SyncStatus, SyncStatusMsg
from typha.sync.memory import MemoryDatastore


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


async def test_a_reset_of_an_established_stream_is_a_disconnect_and_the_client_resumes() -> None:
    """A Typha that dies (SIGKILL) resets its connections instead of closing them. The client
    counts that as a disconnect, as it does an end of file, not as a failed connection attempt
    (tests wait for "every client disconnected and back")."""
    ds = MemoryDatastore(dict(wep(i) for i in range(5)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1", backoff_cap=0.2)
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        sock = conn.transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.abort("test: reset")
        await wait_until(lambda: client.stats.resumes >= 1 and client.connected_to, 10)
        assert client.stats.disconnects == 1 and client.stats.connect_failures == 0
        assert client.stats.last_error.startswith("connection lost"), client.stats.last_error
        nursery.cancel_scope.cancel()
