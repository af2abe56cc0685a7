"""The fast path's pieces: the write-ownership token, the per-codec shared buffers the fan-out
writes, per-codec snapshot bytes, and which connections take the fast path at all."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha import metrics
from typha.cache.feed import CacheFeed
from typha.cache.snapshot import Snapshot, encode_snapshot, msgpack_snapshot_bytes
from typha.cache.view import Breadcrumb
from typha.model.keys import SyncerType
from typha.protocol import SyncStatus
from typha.server.fanout import FanOut
from typha.server.fastpath import MSGPACK, MSGPACK_ZSTD
from typha.server.ownership import CLOSING, FANOUT, WRITER, WriteOwnershipError, WriteToken
from typha.sync.base import ResyncFinished, ResyncStarted, Update, Updates
from typha.sync.memory import MemoryDatastore
from typha.tls import client_ssl_context

from ..tlsutil import TLSFiles

# --- The token ---------------------------------------------------------------------------------


def test_taking_the_token_twice_raises() -> None:
    token = WriteToken(holder=None)
    token.take(FANOUT)  # positive control: a free token can be taken
    with pytest.raises(WriteOwnershipError, match="writer cannot write: fan-out holds"):
        token.take(WRITER)
    token.release(FANOUT)
    token.take(WRITER)
    with pytest.raises(WriteOwnershipError):
        token.take(WRITER)  # not even by the same party


def test_only_the_holder_releases_and_hold_always_releases() -> None:
    token = WriteToken()  # the writer's from the start
    assert token.holder == WRITER and not token.free
    with pytest.raises(WriteOwnershipError):
        token.release(FANOUT)
    token.release(WRITER)
    with pytest.raises(RuntimeError, match="boom"), token.hold(FANOUT):
        raise RuntimeError("boom")
    assert token.free


def test_a_closed_token_is_never_free_again() -> None:
    token = WriteToken()
    token.close()
    token.release(WRITER)  # the writer going idle after the close changes nothing
    assert token.holder == CLOSING
    with pytest.raises(WriteOwnershipError):
        token.take(FANOUT)
    busy = WriteToken(holder=None)
    with busy.hold(FANOUT), pytest.raises(WriteOwnershipError):
        busy.close()


# --- Per-codec shared buffers in the fan-out ---------------------------------------------------


class TaggedCodec:
    """A second wire encoding, the way a new codec plugs in: its own bytes per breadcrumb,
    cached on the breadcrumb, and per snapshot."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.crumb_builds = 0
        self.snapshot_builds = 0

    def _build(self, crumb: Breadcrumb) -> bytes:
        self.crumb_builds += 1
        return self.key.encode() + crumb.frames

    def crumb_bytes(self, crumb: Breadcrumb) -> bytes:
        return crumb.encoded(self.key, self._build)

    def _build_snapshot(self, snap: Snapshot) -> bytes:
        self.snapshot_builds += 1
        return self.key.encode() + b"".join(snap.kvs)

    async def snapshot_bytes(self, snap: Snapshot) -> bytes:
        return await snap.encoded(self.key, self._build_snapshot)


@dataclass(eq=False)
class RecordingClient:
    """A fast-path client that keeps what the fan-out gave it (by identity)."""

    codec: object
    next_seq: int
    write_token: WriteToken = field(default_factory=lambda: WriteToken(holder=None))
    writes: list[object] = field(default_factory=list)
    woken: int = 0

    def try_fast_write(self, first_seq: int, last_seq: int, data: bytes) -> int:
        if not self.write_token.free or self.next_seq != first_seq:
            return -1
        with self.write_token.hold(FANOUT):
            self.writes.append(data)
        self.next_seq = last_seq + 1
        return len(data)

    def try_fast_catch_up(self, last_seq: int, parts: list[bytes]) -> int:
        if not self.write_token.free:
            return -1
        with self.write_token.hold(FANOUT):
            self.writes.append(parts)
        self.next_seq = last_seq + 1
        return sum(len(p) for p in parts)

    def wake(self) -> None:
        self.woken += 1


def _updates(start: int, n: int) -> Updates:
    return Updates([Update(f"/calico/v1/config/k{i}", {"v": i}) for i in range(start, start + n)])


async def test_each_codec_builds_a_run_once_and_every_client_of_it_gets_that_object() -> None:
    feed = CacheFeed.create(syncers=[SyncerType.FELIX], max_batch_size=2)
    view = feed.views[SyncerType.FELIX]
    feed.apply(ResyncStarted())
    feed.apply(_updates(0, 3))
    feed.apply(ResyncFinished())
    gob_like, other = TaggedCodec("gob-like"), TaggedCodec("other")
    head = view.head_seq
    plain = [RecordingClient(MSGPACK, head + 1) for _ in range(3)]
    tagged = [RecordingClient(gob_like, head + 1) for _ in range(4)]
    lone = RecordingClient(other, head + 1)
    busy = RecordingClient(gob_like, head + 1, WriteToken(WRITER))  # its writer is writing
    clients = {*plain, *tagged, lone, busy}
    fanout = FanOut(SyncerType.FELIX, view, feed.wait_for_crumb, clients, interval=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await trio.testing.wait_all_tasks_blocked()
        feed.apply(_updates(10, 5))  # three breadcrumbs (batches of at most 2)
        await wait_until(lambda: all(c.writes for c in clients - {busy}), 5)
        nursery.cancel_scope.cancel()
    crumbs = list(view.crumbs_after(head))
    assert len(crumbs) == 3
    # One buffer per codec, the same object for all of its clients, built from each crumb
    # once (not once per client).
    assert len({id(c.writes[0]) for c in tagged}) == 1
    assert len({id(c.writes[0]) for c in plain}) == 1
    assert gob_like.crumb_builds == 3 and other.crumb_builds == 3
    assert tagged[0].writes[0] == b"".join(b"gob-like" + c.frames for c in crumbs)
    assert plain[0].writes[0] == b"".join(c.frames for c in crumbs)
    # The busy client is not written to but woken, to follow on its own.
    assert busy.writes == [] and busy.woken >= 1
    # The shared crumb bytes are what a connection's own writer follows later too.
    assert gob_like.crumb_bytes(crumbs[0]) is crumbs[0].encoded("gob-like", gob_like._build)
    assert gob_like.crumb_builds == 3


async def test_clients_a_little_behind_share_their_catch_up_parts_per_codec() -> None:
    feed = CacheFeed.create(syncers=[SyncerType.FELIX], max_batch_size=1)
    view = feed.views[SyncerType.FELIX]
    feed.apply(ResyncStarted())
    feed.apply(ResyncFinished())
    feed.apply(_updates(0, 4))
    codec = TaggedCodec("t")
    behind = view.head_seq - 2  # two breadcrumbs behind the head
    lagging = [RecordingClient(codec, behind) for _ in range(3)]
    fanout = FanOut(SyncerType.FELIX, view, feed.wait_for_crumb, set(lagging), interval=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await trio.testing.wait_all_tasks_blocked()
        feed.apply(_updates(10, 1))
        await wait_until(lambda: all(c.writes for c in lagging), 5)
        nursery.cancel_scope.cancel()
    parts = lagging[0].writes[0]
    assert isinstance(parts, list) and len(parts) == 4  # from its position to the new head
    assert all(c.writes[0] is parts for c in lagging)
    assert codec.crumb_builds == 4


async def test_clients_that_joined_during_the_window_stay_on_the_fast_path() -> None:
    """A client whose snapshot is newer than the start of the fan-out's pending run (it joined
    while the run waited out its window) is written from its own position, or left alone if
    it has the whole run — never woken. Waking it took its socket off the fast path (its
    writer then wrote the next breadcrumb itself: an intermittent failure of
    test_an_idle_plain_connection_hands_its_socket_to_the_fan_out)."""
    feed = CacheFeed.create(syncers=[SyncerType.FELIX], max_batch_size=1)
    view = feed.views[SyncerType.FELIX]
    feed.apply(ResyncStarted())
    feed.apply(ResyncFinished())
    codec = TaggedCodec("t")
    head = view.head_seq
    at_start = RecordingClient(codec, head + 1)  # control: the ordinary case
    mid_run = RecordingClient(codec, head + 2)  # its snapshot already held breadcrumb head+1
    ahead = RecordingClient(codec, head + 3)  # its snapshot held the whole run
    clients = {at_start, mid_run, ahead}
    fanout = FanOut(SyncerType.FELIX, view, feed.wait_for_crumb, clients, interval=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await trio.testing.wait_all_tasks_blocked()
        feed.apply(_updates(10, 2))  # two breadcrumbs, one run: head+1..head+2
        await wait_until(lambda: at_start.writes and mid_run.writes, 5)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    first, second = list(view.crumbs_after(head))
    assert at_start.writes == [codec.crumb_bytes(first) + codec.crumb_bytes(second)]
    assert mid_run.writes == [[codec.crumb_bytes(second)]]
    assert ahead.writes == []
    assert (at_start.woken, mid_run.woken, ahead.woken) == (0, 0, 0)
    assert {c.next_seq for c in clients} == {head + 3}


async def test_a_codecs_snapshot_bytes_are_built_once_for_concurrent_joiners() -> None:
    snap = encode_snapshot(3, 10, SyncStatus.IN_SYNC, [b"kv1", b"kv2"], 0.0)
    codec = TaggedCodec("t")
    got: list[bytes] = []

    async def join() -> None:
        got.append(await codec.snapshot_bytes(snap))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(join)
    assert codec.snapshot_builds == 1 and got[0] == b"tkv1kv2"
    assert all(g is got[0] for g in got)
    # The msgpack codecs build theirs on first use and share them the same way.
    assert "msgpack" not in snap._encoded and "msgpack+zstd" not in snap._encoded
    plain = await MSGPACK.snapshot_bytes(snap)
    assert await MSGPACK.snapshot_bytes(snap) is plain
    assert plain == msgpack_snapshot_bytes(snap, False)
    zstd = await MSGPACK_ZSTD.snapshot_bytes(snap)
    assert await MSGPACK_ZSTD.snapshot_bytes(snap) is zstd
    assert zstd == msgpack_snapshot_bytes(snap, True)


# --- Which connections take the fast path ---------------------------------------------------------


def _direct_writes() -> float:
    return metrics.fanout_direct_writes.labels("felix")._value.get()


async def test_an_idle_plain_connection_hands_its_socket_to_the_fan_out() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        await wait_until(lambda: conn.write_token.free, 5)
        before = _direct_writes()
        ds.set(*wep(1, rev=5))
        await wait_until(lambda: client.state == ds.data, 5)
        assert _direct_writes() > before
        nursery.cancel_scope.cancel()


async def test_a_tls_connection_never_takes_the_fast_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tls = TLSFiles(tmp_path)
    cert, key = tls.issue("server", cn="typha-server")
    cfg = make_config(
        ServerCertFile=cert, ServerKeyFile=key, CAFile=tls.ca_file, ClientCN="typha-client"
    )
    ccert, ckey = tls.issue("client", cn="typha-client")
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        ctx = client_ssl_context(ccert, ckey, tls.ca_file)
        client = SyncClient([typha.address], "n1", ssl_context=ctx, server_cn="typha-server")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        before = _direct_writes()
        for rev in range(5, 8):
            ds.set(*wep(1, rev=rev))
            await wait_until(lambda: client.state == ds.data, 5)
            assert conn.write_token.holder == WRITER  # idle or not, its writer keeps it
        assert _direct_writes() == before
        nursery.cancel_scope.cancel()
