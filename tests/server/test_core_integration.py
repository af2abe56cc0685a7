"""The core on real loopback TCP: many clients under churn, resume, conflation, faults, drain.

Every check that something does *not* happen sits next to a positive control that shows the
same path working when it should.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha import metrics
from typha.protocol import (
    BatchDone,
    Goodbye,
    KVKind,
    KVs,
    ResumeToken,
    ServerHello,
    SyncStatus,
    SyncStatusMsg,
)
from typha.protocol.framing import frame
from typha.sync.base import Update
from typha.sync.memory import MemoryDatastore

from .rawclient import RawClient


def digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(msgpack.packb(state[key], use_bin_type=True))
    return h.hexdigest()


def apply_events(state: dict[str, Any], events: list[Any]) -> None:
    for ev in events:
        if isinstance(ev, KVs):
            for k, v in ev.kvs:
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v


def snapshots_generated() -> float:
    return metrics.snapshots_generated.labels("felix")._value.get()


async def churn(ds: MemoryDatastore, n_keys: int, rate: float, stop: trio.Event) -> int:
    rng = random.Random(7)
    writes = 0
    while not stop.is_set():
        i = rng.randrange(n_keys)
        if rng.random() < 0.1:
            ds.delete(wep(i)[0])
        else:
            ds.set(*wep(i, rev=writes))
        writes += 1
        await trio.sleep(1 / rate)
    return writes


async def test_200_clients_join_under_churn_and_converge() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(2000)))
    before = snapshots_generated()
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        stop = trio.Event()
        nursery.start_soon(churn, ds, 2000, 400.0, stop)
        clients = [SyncClient([typha.address], f"node{i}") for i in range(200)]
        for c in clients:
            nursery.start_soon(c.run)
            await trio.sleep(0.002)  # joins spread over ~0.4 s, while churn runs
        await wait_until(lambda: all(c.in_sync.is_set() for c in clients), 60)
        await trio.sleep(0.5)
        stop.set()
        want = digest(ds.data)
        await wait_until(lambda: all(digest(c.state) == want for c in clients), 30)
        # Joiners share snapshots: far fewer builds than clients.
        built = snapshots_generated() - before
        assert 1 <= built < 40, built
        assert all(c.stats.snapshots == 1 for c in clients)
        nursery.cancel_scope.cancel()


async def test_resume_after_drop_sends_exactly_the_missed_changes() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(100)))
    async with run_typha(ds) as typha:
        raw = await RawClient.connect(typha.port)
        await raw.hello()
        hello = await raw.read_until(lambda e: isinstance(e, ServerHello))
        assert isinstance(hello, ServerHello) and not hello.resumed
        done = await raw.read_until(lambda e: isinstance(e, BatchDone))
        assert isinstance(done, BatchDone) and done.total == 100
        ds.set(*wep(1, rev=1))
        delta = await raw.read_until(lambda e: isinstance(e, KVs) and e.kind is KVKind.DELTA)
        assert isinstance(delta, KVs)
        token = ResumeToken(hello.epoch, delta.seq, delta.revision)
        await raw.aclose()

        missed = [wep(2, rev=2), wep(3, rev=2)]
        for kv in missed:
            ds.set(*kv)
        ds.delete(wep(4)[0])
        await trio.sleep(0.1)

        again = await RawClient.connect(typha.port)
        await again.hello(resume=token)
        hello2 = await again.read_until(lambda e: isinstance(e, ServerHello))
        assert isinstance(hello2, ServerHello) and hello2.resumed
        await again.read_until(lambda e: isinstance(e, SyncStatusMsg))
        got = [kv for e in again.events if isinstance(e, KVs) for kv in e.kvs]
        assert got == [*missed, (wep(4)[0], None)]
        assert not any(isinstance(e, KVs) and e.kind is KVKind.SNAPSHOT for e in again.events)
        await again.aclose()

        # Positive control: without a token the same server sends a snapshot.
        fresh = await RawClient.connect(typha.port)
        await fresh.hello()
        done = await fresh.read_until(lambda e: isinstance(e, BatchDone))
        assert isinstance(done, BatchDone) and done.kind is KVKind.SNAPSHOT
        # (The snapshot may be the shared one from the first join; deltas follow it.)
        fresh_state: dict[str, Any] = {}
        with trio.move_on_after(2):
            while fresh_state != ds.data:
                await fresh.read_until(lambda e: True)
                fresh_state.clear()
                apply_events(fresh_state, fresh.events)
        assert fresh_state == ds.data
        await fresh.aclose()


async def test_sync_client_resumes_without_snapshot_after_a_drop() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(300)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1", backoff_base=0.2)
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        client.drop_connection()
        for i in range(10):
            ds.set(*wep(i, rev=5))
        await wait_until(lambda: client.state == ds.data)
        assert client.stats.snapshots == 1
        assert client.stats.resumes == 1
        assert client.stats.connects == 2
        nursery.cancel_scope.cancel()


async def test_resume_on_another_replica_by_revision() -> None:
    """Two replicas of the same datastore history: a client resumes on the other one by its
    datastore revision."""
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    async with run_typha(ds) as a:
        client = SyncClient([a.address], "n1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            await client.in_sync.wait()
            ds.set(*wep(1, rev=9))
            await wait_until(lambda: client.state == ds.data)
            nursery.cancel_scope.cancel()
    token = client.position
    assert token is not None and token.revision is not None
    # Replica B's history covers the client's revision only if B has seen it happen; build
    # B from the same datastore and replay the change after it starts.
    ds2 = MemoryDatastore(dict(wep(i) for i in range(50)))
    ds2.revision = token.revision - 1
    async with run_typha(ds2) as b:
        ds2.set(*wep(1, rev=9))  # brings B to the client's revision
        ds2.set(*wep(2, rev=9))  # then one change the client has not seen
        await wait_until(lambda: b.feed.views["felix"].revision == token.revision + 1)
        raw = await RawClient.connect(b.port)
        await raw.hello(resume=token)
        hello = await raw.read_until(lambda e: isinstance(e, ServerHello))
        assert isinstance(hello, ServerHello) and hello.resumed
        await raw.read_until(lambda e: isinstance(e, SyncStatusMsg))
        got = [kv for e in raw.events if isinstance(e, KVs) for kv in e.kvs]
        assert got == [wep(2, rev=9)]
        await raw.aclose()
        # Positive control: a revision older than B's history gets a snapshot.
        raw2 = await RawClient.connect(b.port)
        await raw2.hello(resume=ResumeToken(token.epoch, token.seq, token.revision - 5))
        hello = await raw2.read_until(lambda e: isinstance(e, ServerHello))
        assert isinstance(hello, ServerHello) and not hello.resumed
        await raw2.aclose()


async def test_stalled_client_catches_up_by_conflation() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(300)))
    cfg = make_config(HistoryMaxUpdates=1000, ServerPongTimeoutSecs=600, ServerPingIntervalSecs=60)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = SyncClient([typha.address], "neighbour")
        nursery.start_soon(neighbour.run)
        stalled = await RawClient.connect(typha.port, rcvbuf=4096)
        await stalled.hello(compressions=())
        await stalled.read_until(lambda e: isinstance(e, BatchDone))
        state: dict[str, Any] = {}
        apply_events(state, stalled.events)
        # The stalled client reads nothing while ~12 MB of changes go by.
        for r in range(20):
            ds.apply([Update(*wep(i, rev=r, pad=2000)) for i in range(300)])
            await trio.sleep(0.01)
        ds.delete(wep(5)[0])
        await wait_until(lambda: neighbour.state == ds.data)
        view = typha.feed.views["felix"]
        assert view.oldest_seq > 10  # the history moved on past the stalled client
        head = view.head_seq
        await stalled.read_until(
            lambda e: (
                getattr(e, "seq", None) == head
                and (isinstance(e, BatchDone) or (isinstance(e, KVs) and e.kind is KVKind.DELTA))
            )
        )
        apply_events(state, stalled.events)
        assert state == ds.data
        assert any(isinstance(e, BatchDone) and e.kind is KVKind.CATCHUP for e in stalled.events)
        # Positive control for the fast path: the neighbour never needed a catch-up.
        assert neighbour.stats.catchups == 0 and neighbour.stats.snapshots == 1
        await stalled.aclose()
        nursery.cancel_scope.cancel()


async def _neighbour_keeps_receiving(ds: MemoryDatastore, neighbour: SyncClient) -> None:
    ds.set(*wep(999, rev=random.randrange(1 << 30)))
    await wait_until(lambda: neighbour.state == ds.data, 10)


async def test_pong_timeout_drops_only_the_silent_client() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    cfg = make_config(ServerPingIntervalSecs=0.1, ServerPongTimeoutSecs=0.5)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = SyncClient([typha.address], "neighbour")
        nursery.start_soon(neighbour.run)
        await neighbour.in_sync.wait()
        silent = await RawClient.connect(typha.port)  # reads, never answers pings
        await silent.hello()
        events = await silent.read_until_closed(timeout=5)
        goodbyes = [e for e in events if isinstance(e, Goodbye)]
        assert goodbyes and "pong" in goodbyes[0].reason
        await silent.aclose()
        # Positive control: the neighbour answers pings and is still connected and fed.
        await _neighbour_keeps_receiving(ds, neighbour)
        assert neighbour.stats.connects == 1
        nursery.cancel_scope.cancel()


async def test_client_read_timeout_reconnects() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(5)))
    quiet = make_config(ServerPingIntervalSecs=30)
    async with run_typha(ds, quiet) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n", read_timeout=0.3, backoff_base=0.01)
        nursery.start_soon(client.run)
        await wait_until(lambda: client.stats.read_timeouts >= 1, 5)
        nursery.cancel_scope.cancel()
    chatty = make_config(ServerPingIntervalSecs=0.05)
    async with run_typha(ds, chatty) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n", read_timeout=0.3)
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        await trio.sleep(1.0)
        assert client.stats.read_timeouts == 0 and client.stats.connects == 1
        nursery.cancel_scope.cancel()


async def test_handshake_timeout_closes_silent_connections() -> None:
    ds = MemoryDatastore({})
    cfg = make_config(ServerHandshakeTimeoutSecs=0.3)
    async with run_typha(ds, cfg) as typha:
        mute = await RawClient.connect(typha.port)
        with trio.fail_after(3):
            assert await mute.stream.receive_some(10) == b""
        await mute.aclose()
        prompt = await RawClient.connect(typha.port)
        await prompt.hello()
        assert isinstance(
            await prompt.read_until(lambda e: isinstance(e, ServerHello)), ServerHello
        )
        await prompt.aclose()


async def test_oversized_and_garbage_frames_close_only_that_connection() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        neighbour = SyncClient([typha.address], "neighbour")
        nursery.start_soon(neighbour.run)
        await neighbour.in_sync.wait()

        big = await RawClient.connect(typha.port)
        await big.hello()
        await big.read_until(lambda e: isinstance(e, BatchDone))
        await big.stream.send_all((2 << 20).to_bytes(4, "big") + b"\x00")
        events = await big.read_until_closed()
        bye = [e for e in events if isinstance(e, Goodbye)]
        assert bye and "exceeds" in bye[0].reason

        garbage = await RawClient.connect(typha.port)
        await garbage.hello()
        await garbage.read_until(lambda e: isinstance(e, BatchDone))
        await garbage.stream.send_all(frame(b"\xc1\xc1\xc1"))
        events = await garbage.read_until_closed()
        assert any(isinstance(e, Goodbye) and "msgpack" in e.reason for e in events)

        before_hello = await RawClient.connect(typha.port)
        await before_hello.stream.send_all(b"GET / HTTP/1.1\r\n\r\n" * 4)
        assert await before_hello.read_until_closed() == []

        await _neighbour_keeps_receiving(ds, neighbour)
        assert neighbour.stats.connects == 1
        for c in (big, garbage, before_hello):
            await c.aclose()
        nursery.cancel_scope.cancel()


async def test_drain_says_goodbye_to_everyone_spread_over_time() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    cfg = make_config(ShutdownTimeoutSecs=1.0, RedirectAddrs="127.0.0.1:5999")
    async with run_typha(ds, cfg) as typha:
        raws = []
        for i in range(10):
            raw = await RawClient.connect(typha.port)
            await raw.hello(node=f"n{i}")
            await raw.read_until(lambda e: isinstance(e, SyncStatusMsg))
            raws.append(raw)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(typha.server.drain)
            for raw in raws:
                await raw.read_until_closed(timeout=5)
        took = trio.current_time() - started
        byes = [next(e for e in r.events if isinstance(e, Goodbye)) for r in raws]
        assert all(b.address == "127.0.0.1:5999" for b in byes)
        assert all(b.reason == "server shutting down" for b in byes)
        assert 0.5 < took < 3.0, took  # spread over the shutdown timeout, not all at once
        assert typha.server.shutting_down
        # No new connections are accepted once draining.
        try:
            late = await RawClient.connect(typha.port)
        except OSError:
            pass
        else:
            await late.hello()
            assert await late.read_until_closed(timeout=3) == []
            await late.aclose()
        for raw in raws:
            await raw.aclose()


async def test_goodbye_queued_while_a_ping_is_being_written_still_goes_out() -> None:
    """close() can run while the writer task yields inside the write of a Ping it has already
    taken from the control queue. The Goodbye queued then must still be written before the
    socket closes (before the fix, the writer saw ``closing`` after the Ping and hung up
    without it: the client saw a bare EOF). A second client closed while idle is the control."""
    ds = MemoryDatastore(dict(wep(i) for i in range(5)))
    cfg = make_config(ServerPingIntervalSecs=0.05, RedirectAddrs="127.0.0.1:5999")
    async with run_typha(ds, cfg) as typha:
        raced, idle = await RawClient.connect(typha.port), await RawClient.connect(typha.port)
        for node, raw in (("raced", raced), ("idle", idle)):
            await raw.hello(node=node)
            await raw.read_until(lambda e: isinstance(e, SyncStatusMsg))
        await wait_until(lambda: len(typha.server.connections) == 2)
        conns = {c.info.node: c for c in typha.server.connections.values()}
        conn = conns["raced"]
        real_write_all = conn.transport.write_all
        closed_mid_ping = trio.Event()

        async def write_all_then_close(data, timeout):  # type: ignore[no-untyped-def]
            n = await real_write_all(data, timeout)
            if not closed_mid_ping.is_set() and not conn.closing:
                closed_mid_ping.set()
                conn.close("closed mid-ping", address="127.0.0.1:5999")
            return n

        conn.transport.write_all = write_all_then_close  # type: ignore[method-assign]
        await raced.read_until_closed(timeout=5)
        assert closed_mid_ping.is_set()
        byes = [e for e in raced.events if isinstance(e, Goodbye)]
        assert [b.reason for b in byes] == ["closed mid-ping"], raced.events[-3:]
        assert isinstance(raced.events[-1], Goodbye)  # nothing after it, not even a Ping

        conns["idle"].close("closed while idle")
        await idle.read_until_closed(timeout=5)
        assert [e.reason for e in idle.events if isinstance(e, Goodbye)] == ["closed while idle"]
        for raw in (raced, idle):
            await raw.aclose()


async def test_status_reports_each_client() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(5)))
    cfg = make_config(ServerPingIntervalSecs=0.05)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "node-a")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        await wait_until(lambda: any(c["acked_seq"] >= 0 for c in typha.server.status()["clients"]))
        status = typha.server.status()
        (entry,) = status["clients"]
        assert entry["node"] == "node-a" and entry["syncer"] == "felix"
        assert entry["lag"] == 0 and entry["bytes_sent"] > 0
        assert status["views"]["felix"]["status"] == "in-sync"
        assert client.status is SyncStatus.IN_SYNC
        nursery.cancel_scope.cancel()
