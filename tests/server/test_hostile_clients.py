"""Hostile clients against a running server: each is dealt with alone, the neighbours are fed."""

from __future__ import annotations

import socket

import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha.protocol import encode_payload, frame
from typha.protocol.messages import ClientHello
from typha.sync.base import Update
from typha.sync.memory import MemoryDatastore

from .rawclient import RawClient


async def neighbour_of(typha, nursery) -> SyncClient:  # type: ignore[no-untyped-def]
    neighbour = SyncClient([typha.address], "neighbour")
    nursery.start_soon(neighbour.run)
    await neighbour.in_sync.wait()
    return neighbour


async def still_fed(ds: MemoryDatastore, neighbour: SyncClient, tag: int) -> None:
    ds.set(*wep(777, rev=tag))
    await wait_until(lambda: neighbour.state == ds.data, 10)
    assert neighbour.stats.connects == 1


async def test_garbage_and_oversized_prefix_before_hello() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        neighbour = await neighbour_of(typha, nursery)
        for payload in (b"\xff" * 1000, (1 << 31).to_bytes(4, "big") + b"\x00" * 16):
            raw = await RawClient.connect(typha.port)
            await raw.stream.send_all(payload)
            assert await raw.read_until_closed(5) == []
            await raw.aclose()
        await still_fed(ds, neighbour, 1)
        nursery.cancel_scope.cancel()


async def test_slowloris_handshake_is_cut_at_the_handshake_timeout() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    cfg = make_config(ServerHandshakeTimeoutSecs=1.0)
    hello = frame(encode_payload(ClientHello(node="slow")))
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = await neighbour_of(typha, nursery)
        slow = await RawClient.connect(typha.port)
        started = trio.current_time()
        closed = False
        for b in hello:  # one byte every 0.2 s: the hello would take ~12 s
            try:
                await slow.stream.send_all(bytes([b]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed = True
                break
            with trio.move_on_after(0.2):
                if await slow.stream.receive_some(10) == b"":
                    closed = True
                    break
        took = trio.current_time() - started
        # Well under the ~12 s the hello would take; loose enough for a loaded machine.
        assert closed and took < 6, took
        await slow.aclose()
        # Positive control: the same hello sent at once is answered.
        fast = await RawClient.connect(typha.port)
        await fast.hello(node="slow")
        await fast.read_until(lambda e: type(e).__name__ == "ServerHello")
        await fast.aclose()
        await still_fed(ds, neighbour, 2)
        nursery.cancel_scope.cancel()


async def test_client_that_never_reads_is_dropped_by_the_write_timeout() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    cfg = make_config(ServerWriteTimeoutSecs=1.0, ServerPingIntervalSecs=60)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = await neighbour_of(typha, nursery)
        deaf = await RawClient.connect(typha.port, rcvbuf=4096)
        await deaf.hello(node="deaf", compressions=())
        await wait_until(lambda: len(typha.server.connections) == 2)
        # Push far more than the socket buffers hold while the deaf client reads nothing.
        for r in range(30):
            ds.apply([Update(*wep(i, rev=r, pad=20000)) for i in range(10)])
            await trio.sleep(0.02)
        await wait_until(lambda: len(typha.server.connections) == 1, 15)
        assert all(c.info.node == "neighbour" for c in typha.server.connections.values())
        await still_fed(ds, neighbour, 3)
        await deaf.aclose()
        nursery.cancel_scope.cancel()


async def test_connection_flood_past_the_limit() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    cfg = make_config(MaxConnectionsUpperLimit=20, MaxConnectionsLowerLimit=1)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = await neighbour_of(typha, nursery)
        socks = []
        refused = 0
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", typha.port))
            s.setblocking(False)
            socks.append(s)
        await trio.sleep(0.5)
        for s in socks:
            try:
                if s.recv(1) == b"":
                    refused += 1
            except BlockingIOError:
                pass
            except OSError:
                refused += 1
        assert refused >= 80, refused  # at most 19 slots beside the neighbour
        assert typha.server.active_connections <= 20
        for s in socks:
            s.close()
        await still_fed(ds, neighbour, 4)
        # Positive control: once the flood is gone, a new client is served.
        late = SyncClient([typha.address], "late")
        nursery.start_soon(late.run)
        with trio.fail_after(10):
            await late.in_sync.wait()
        nursery.cancel_scope.cancel()
