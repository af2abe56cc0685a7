"""EtcdClient against a real etcd (random loopback ports, throw-away data dir; never mocks).

Each negative check sits next to a positive control that shows the same call can succeed.
Figures printed here (run with ``-s``) are quoted in docs/etcd.md.
"""

from __future__ import annotations

import base64
import gc
import json
import time
from pathlib import Path

import pytest
import trio

from tests.peers.etcd import EtcdServer, EtcdTLS, _binary_info, find_etcd
from tests.peers.plugin import EtcdFactory
from tests.peers.ports import LOOPBACK, free_port
from typha.sync.etcd_client import (
    AuthenticationFailed,
    DeleteOp,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    NDJSONReader,
    PutOp,
    RevisionCompacted,
    WatchCanceled,
    WatchCompacted,
    WatchEnded,
    WatchResponse,
    WatchStream,
    prefix_range_end,
)

PREFIX = "/calico/test/"


def progress_notify_args(server_binary: str, interval: str = "1s") -> list[str]:
    """The progress-notify flag under the name this etcd knows (3.6 renamed it)."""
    flags = _binary_info(server_binary)[1]
    name = (
        "--watch-progress-notify-interval"
        if "--watch-progress-notify-interval" in flags
        else "--experimental-watch-progress-notify-interval"
    )
    return [f"{name}={interval}"]


def client_for(server: EtcdServer, **kwargs: object) -> EtcdClient:
    return EtcdClient([server.client_url], **kwargs)  # type: ignore[arg-type]


async def next_response(stream: WatchStream, timeout: float = 10.0) -> WatchResponse:
    with trio.fail_after(timeout):
        return await stream.__anext__()


async def collect_events(stream: WatchStream, count: int, timeout: float = 30.0) -> list:
    events: list = []
    with trio.fail_after(timeout):
        async for resp in stream:
            events.extend(resp.events)
            if len(events) >= count:
                return events
    raise AssertionError("unreachable")


def dead_endpoint() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://{LOOPBACK}:{free_port()}"


# --- NDJSON framing (pure) ---------------------------------------------------------------------


async def _chunks(parts: list[bytes]):
    for p in parts:
        yield p


@pytest.mark.parametrize("split", [1, 3, 7, 64, 10_000])
async def test_ndjson_reader_splits_on_newlines_only(split: int) -> None:
    # U+2028 and U+0085 are legal unescaped in JSON strings; httpx's aiter_lines would split
    # on them. A 3 MB line checks there is no cap.
    lines = [
        json.dumps({"a": "x\u2028y\u0085z"}, ensure_ascii=False).encode(),
        b'{"big": "' + b"q" * 3_000_000 + b'"}',
        b"{}",
    ]
    data = b"\n".join(lines) + b"\n\n"
    parts = [data[i : i + split] for i in range(0, len(data), split)] if split < 10_000 else [data]
    agen = _chunks(parts)
    reader = NDJSONReader(agen)
    got = []
    while (line := await reader.readline()) is not None:
        got.append(line)
    assert got == lines
    # A fragment without its newline at EOF is a cut stream, not a message.
    reader = NDJSONReader(_chunks([b'{"a": 1}\n{"trunc']))
    assert await reader.readline() == b'{"a": 1}'
    assert await reader.readline() is None


# --- unary KV API -------------------------------------------------------------------------------


async def test_put_range_delete(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        rev = await c.put(PREFIX + "a", b"one")
        await c.put(PREFIX + "b", b"\x00\xffbinary")
        await c.put("/calico/tesu", b"outside the prefix")
        single = await c.range(PREFIX + "a")
        assert [(kv.key, kv.value, kv.mod_revision) for kv in single.kvs] == [
            (PREFIX + "a", b"one", rev)
        ]
        assert single.revision == rev + 2
        whole = await c.range(PREFIX, prefix_range_end(PREFIX))
        assert [kv.key for kv in whole.kvs] == [PREFIX + "a", PREFIX + "b"]
        assert whole.kvs[1].value == b"\x00\xffbinary"
        assert not whole.more and whole.count == 2
        keys_only = await c.range(PREFIX, prefix_range_end(PREFIX), keys_only=True)
        assert [kv.value for kv in keys_only.kvs] == [b"", b""]
        # Independent read through the test harness agrees.
        assert etcd_server.get(PREFIX + "a") == b"one"

        result = await c.delete(PREFIX + "a")
        assert result.deleted == 1
        assert (await c.range(PREFIX + "a")).kvs == []  # negative: gone
        assert (await c.range(PREFIX + "b")).kvs != []  # positive control: neighbour stays
        assert (await c.delete(PREFIX + "a")).deleted == 0
        assert etcd_server.get(PREFIX + "a") is None


async def test_range_paginated_pins_the_first_page_revision(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        await c.txn(PutOp(f"{PREFIX}{i:04d}", b"v1") for i in range(100))
        await c.txn(PutOp(f"{PREFIX}{i:04d}", b"v1") for i in range(100, 200))
        await c.txn(PutOp(f"{PREFIX}{i:04d}", b"v1") for i in range(200, 250))
        pages = []
        async for page in c.range_paginated(PREFIX, page_size=100):
            pages.append(page)
            if len(pages) == 1:
                # Written after the first page: the snapshot must not see these.
                await c.put(f"{PREFIX}0249", b"v2")
                await c.put(f"{PREFIX}9999", b"new")
        assert [len(p.kvs) for p in pages] == [100, 100, 50]
        assert len({p.revision for p in pages}) == 1
        keys = [kv.key for p in pages for kv in p.kvs]
        assert keys == [f"{PREFIX}{i:04d}" for i in range(250)]
        assert pages[-1].kvs[-1].value == b"v1"  # negative: pinned, old value
        # Positive control: an unpinned read sees both writes.
        fresh = [kv async for p in c.range_paginated(PREFIX, page_size=100) for kv in p.kvs]
        assert len(fresh) == 251
        assert {kv.key: kv.value for kv in fresh}[f"{PREFIX}0249"] == b"v2"
        # An empty range still yields one page, carrying the revision.
        empty = [p async for p in c.range_paginated("/nothing/here/")]
        assert len(empty) == 1 and empty[0].kvs == [] and empty[0].revision > 0


async def test_txn_applies_128_ops_in_one_revision(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        rev = await c.txn(PutOp(f"{PREFIX}{i:03d}", b"x" * 400) for i in range(128))
        kvs = (await c.range(PREFIX, prefix_range_end(PREFIX))).kvs
        assert len(kvs) == 128 and {kv.mod_revision for kv in kvs} == {rev}
        # Mixed puts and deletes, one revision again.
        rev2 = await c.txn(
            [DeleteOp(f"{PREFIX}{i:03d}") for i in range(64)] + [PutOp(PREFIX + "new", b"n")]
        )
        assert rev2 == rev + 1
        kvs = (await c.range(PREFIX, prefix_range_end(PREFIX))).kvs
        assert len(kvs) == 65
        # etcd's default --max-txn-ops is 128: one more is refused, and nothing is applied.
        with pytest.raises(EtcdError, match="too many operations"):
            await c.txn(PutOp(f"{PREFIX}over{i:03d}", b"x") for i in range(129))
        assert (await c.range(PREFIX + "over000")).kvs == []


async def test_compact_makes_old_revisions_unreadable(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        old = await c.put(PREFIX + "k", b"v1")
        new = await c.put(PREFIX + "k", b"v2")
        # Positive control: history is readable before compaction.
        assert (await c.range(PREFIX + "k", revision=old)).kvs[0].value == b"v1"
        await c.compact(new)
        with pytest.raises(RevisionCompacted):
            await c.range(PREFIX + "k", revision=old)
        assert (await c.range(PREFIX + "k", revision=new)).kvs[0].value == b"v2"
        assert await c.revision() == new


# --- watch --------------------------------------------------------------------------------------


async def test_watch_yields_put_and_delete(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        start = await c.revision() + 1
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start) as stream:
            assert stream.created_revision == start - 1
            r1 = await c.put(PREFIX + "a", b"1")
            await c.put("/calico/elsewhere", b"not watched")
            r2 = await c.delete(PREFIX + "a")
            events = await collect_events(stream, 2)
        assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
            ("PUT", PREFIX + "a", b"1", r1),
            ("DELETE", PREFIX + "a", b"", r2.revision),
        ]
        # prev_kv on request: the deleted value comes with the DELETE.
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start, prev_kv=True) as stream:
            events = await collect_events(stream, 2)
        assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
        assert events[0].prev_kv is None
    gc.collect()  # any abandoned stream generator would warn (= fail) here


async def test_watch_progress_notifications(etcd_factory: EtcdFactory) -> None:
    etcd = etcd_factory(extra_args=progress_notify_args(find_etcd() or "etcd"))
    async with client_for(etcd) as c:
        rev = await c.put(PREFIX + "a", b"1")
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev + 1) as stream:
            # A write outside the range moves the store revision; only progress tells us.
            outside = await c.put("/elsewhere", b"x")
            with trio.fail_after(10):
                while True:
                    resp = await stream.__anext__()
                    assert resp.is_progress_notify and resp.events == []
                    if resp.revision >= outside:
                        break
            # Positive control: a change in range arrives as an event, not as progress.
            await c.put(PREFIX + "b", b"2")
            with trio.fail_after(10):
                while not (resp := await stream.__anext__()).events:
                    pass
            assert [e.kv.key for e in resp.events] == [PREFIX + "b"]


async def test_watch_from_compacted_revision_raises(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        first = await c.put(PREFIX + "k", b"v1")
        second = await c.put(PREFIX + "k", b"v2")
        await c.compact(second)
        # Positive control: starting at the compaction revision is still possible.
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=second) as stream:
            assert (await collect_events(stream, 1))[0].kv.value == b"v2"
        with pytest.raises(WatchCompacted) as info:
            async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=first) as stream:
                await next_response(stream)
        assert info.value.compact_revision == second
    gc.collect()


async def test_watch_stream_end_raises_watch_ended(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        start = await c.revision() + 1
        with pytest.raises(WatchEnded):
            async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start) as stream:
                await c.put(PREFIX + "a", b"1")
                assert len(await collect_events(stream, 1)) == 1  # positive control
                await trio.to_thread.run_sync(etcd_server.kill)
                await next_response(stream)
        # Nothing listens now: a new watch cannot even open.
        with pytest.raises(EtcdUnavailable):
            async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start):
                pass
    gc.collect()


async def test_watch_idle_timeout(etcd_server: EtcdServer) -> None:
    async with client_for(etcd_server) as c:
        start = await c.revision() + 1
        async with c.watch(
            PREFIX, prefix_range_end(PREFIX), start_revision=start, idle_timeout=0.5
        ) as stream:
            await c.put(PREFIX + "a", b"1")
            assert len(await collect_events(stream, 1)) == 1  # positive control
            t0 = trio.current_time()
            with pytest.raises(WatchEnded, match="silent"):
                await next_response(stream)
            assert 0.4 < trio.current_time() - t0 < 5


async def test_watch_replays_20k_events_in_one_huge_message(etcd_server: EtcdServer) -> None:
    """A 20k-event replay arrives as one ~15 MB NDJSON line; it must decode whole."""
    value = json.dumps({"spec": {"pad": "p" * 380}}).encode()
    async with client_for(etcd_server) as c:
        start = await c.revision() + 1
        for base in range(0, 20_000, 128):
            end = min(base + 128, 20_000)
            await c.txn(PutOp(f"{PREFIX}{i:05d}", value) for i in range(base, end))
        t0 = time.perf_counter()
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start) as stream:
            events = await collect_events(stream, 20_000, timeout=60)
        elapsed = time.perf_counter() - t0
        assert len(events) == 20_000
        assert [e.kv.key for e in events[:2]] == [f"{PREFIX}00000", f"{PREFIX}00001"]
        assert all(e.kv.value == value for e in events)
        print(f"\nwatch replay: 20000 events in {elapsed:.2f}s = {20_000 / elapsed:,.0f} ev/s")


async def test_list_20k_keys_and_live_watch_throughput(etcd_server: EtcdServer) -> None:
    """Measures (printed with -s): paged list of 20k keys, and a live watch during a
    txn-batched put run of 20k keys."""
    total = 20_000
    value = json.dumps({"spec": {"pad": "p" * 380}}).encode()
    async with client_for(etcd_server) as c, client_for(etcd_server) as writer:
        start = await c.revision() + 1
        received = 0
        first_at = last_at = 0.0
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=start) as stream:

            async def consume() -> None:
                nonlocal received, first_at, last_at
                async for resp in stream:
                    if received == 0:
                        first_at = time.perf_counter()
                    received += len(resp.events)
                    last_at = time.perf_counter()
                    if received >= total:
                        return

            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume)
                    t0 = time.perf_counter()
                    for base in range(0, total, 128):
                        end = min(base + 128, total)
                        await writer.txn(PutOp(f"{PREFIX}{i:05d}", value) for i in range(base, end))
                    write_done = time.perf_counter()
        assert received == total
        put_rate = total / (write_done - t0)
        watch_rate = total / (last_at - t0)
        lag = last_at - write_done
        print(
            f"\nlive watch during txn puts: writer {put_rate:,.0f} puts/s, watcher "
            f"{watch_rate:,.0f} ev/s end to end, lag after last txn {lag * 1000:.0f} ms"
        )

        timings = []
        for page_size in (1000, 5000):
            t0 = time.perf_counter()
            n = 0
            async for page in c.range_paginated(PREFIX, page_size=page_size):
                n += len(page.kvs)
            timings.append((page_size, time.perf_counter() - t0))
            assert n == total
        t0 = time.perf_counter()
        whole = await c.range(PREFIX, prefix_range_end(PREFIX))
        single = time.perf_counter() - t0
        assert len(whole.kvs) == total
        print(
            "list 20k keys (~400 B values): "
            + ", ".join(f"pages of {ps}: {t:.2f}s" for ps, t in timings)
            + f", one range: {single:.2f}s"
        )


# --- endpoints and failover ------------------------------------------------------------------


async def test_failover_to_next_endpoint(etcd_server: EtcdServer) -> None:
    async with EtcdClient([dead_endpoint(), etcd_server.client_url]) as c:
        await c.put(PREFIX + "a", b"1")
        assert c.current_endpoint == etcd_server.client_url
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=1) as stream:
            assert stream.endpoint == etcd_server.client_url
            assert len(await collect_events(stream, 1)) == 1
    # host:port without a scheme means http when no TLS files are given.
    async with EtcdClient(f"{LOOPBACK}:{free_port()},{etcd_server.endpoint}") as c:
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
    # Negative: every endpoint dead.
    async with EtcdClient([dead_endpoint(), dead_endpoint()]) as c:
        with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await c.range(PREFIX + "a")
        with pytest.raises(EtcdUnavailable):
            async with c.watch(PREFIX, prefix_range_end(PREFIX)):
                pass


async def test_request_timeout_is_enforced(etcd_server: EtcdServer) -> None:
    """A member that accepts TCP but never answers fails over once the trio deadline hits."""
    with trio.socket.socket() as silent:
        await silent.bind((LOOPBACK, 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        async with EtcdClient(
            [f"http://{LOOPBACK}:{port}", etcd_server.client_url], request_timeout=0.5
        ) as c:
            t0 = trio.current_time()
            await c.put(PREFIX + "a", b"1")
            assert 0.4 < trio.current_time() - t0 < 5
        async with EtcdClient([f"http://{LOOPBACK}:{port}"], request_timeout=0.5) as c:
            with pytest.raises(EtcdUnavailable, match="TooSlowError"):
                await c.range(PREFIX + "a")


# --- TLS and auth -----------------------------------------------------------------------------


async def test_mutual_tls(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    tls = EtcdTLS.generate(tmp_path)
    etcd = etcd_factory(tls=tls)
    assert etcd.client_url.startswith("https://")
    kwargs = {
        "ca_file": tls.ca_file,
        "cert_file": tls.client_cert_file,
        "key_file": tls.client_key_file,
    }
    async with EtcdClient([etcd.client_url], **kwargs) as c:  # type: ignore[arg-type]
        rev = await c.put(PREFIX + "tls", b"ok")
        assert (await c.range(PREFIX + "tls")).kvs[0].value == b"ok"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert (await collect_events(stream, 1))[0].kv.value == b"ok"
    # host:port with TLS files means https.
    async with EtcdClient([etcd.endpoint], **kwargs) as c:  # type: ignore[arg-type]
        assert (await c.range(PREFIX + "tls")).kvs[0].value == b"ok"
    # Negative: trusting the CA but without a client cert, the handshake is refused.
    async with EtcdClient([etcd.client_url], ca_file=tls.ca_file) as c:
        with pytest.raises(EtcdUnavailable):
            await c.range(PREFIX + "tls")
    # Negative: without the CA, the server cert is not trusted.
    async with EtcdClient(
        [etcd.client_url], cert_file=tls.client_cert_file, key_file=tls.client_key_file
    ) as c:
        with pytest.raises(EtcdUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await c.range(PREFIX + "tls")


async def test_password_auth_and_reauthentication(etcd_server: EtcdServer) -> None:
    etcd_server.enable_auth("typha", "s3cret")
    async with client_for(etcd_server, username="typha", password="s3cret") as c:
        rev = await c.put(PREFIX + "a", b"1")
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert len(await collect_events(stream, 1)) == 1

        # Simple tokens live in etcd's memory (3.4 re-creates them while replaying its WAL,
        # 3.6 does not): after a restart the client must carry on either way.
        await trio.to_thread.run_sync(etcd_server.restart)
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert len(await collect_events(stream, 1)) == 1
        # Deterministically: a token etcd does not know (as after expiry) is answered with
        # "invalid auth token" (HTTP 401 on unary calls, a cancelled watch on /v3/watch);
        # the client authenticates again and retries, once.
        generation = c._token_generation
        c._token = "expired.1"
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        assert c._token_generation == generation + 1
        c._token = "expired.1"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert len(await collect_events(stream, 1)) == 1
        assert c._token_generation == generation + 2

    # Negative: wrong password, and no credentials at all.
    async with client_for(etcd_server, username="typha", password="wrong") as c:
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            await c.range(PREFIX + "a")
    async with client_for(etcd_server) as c:
        with pytest.raises(EtcdError, match="user name is empty"):
            await c.range(PREFIX + "a")
        with pytest.raises(WatchCanceled, match="user name is empty"):
            async with c.watch(PREFIX, prefix_range_end(PREFIX)) as stream:
                await next_response(stream)

    # A user with read access to one prefix only: allowed there, refused elsewhere.
    etcd_server.add_user("reader", "pw", read_prefix=PREFIX)
    async with client_for(etcd_server, username="reader", password="pw") as c:
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        with pytest.raises(EtcdError, match="permission denied"):
            await c.range("/calico/other")
        with pytest.raises(EtcdError, match="permission denied"):
            await c.put(PREFIX + "a", b"2")
    gc.collect()


async def test_credentials_against_server_without_auth(etcd_server: EtcdServer) -> None:
    """Like etcd's Go client, configured credentials do not break a server without auth."""
    async with client_for(etcd_server, username="typha", password="x") as c:
        await c.put(PREFIX + "a", b"1")
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"


def test_b64_helper_matches_gateway_encoding() -> None:
    """Keys with non-ASCII and non-UTF-8 bytes round-trip through the client's encoding."""
    from typha.sync.etcd_client import _b64, _parse_kv

    raw = "/calico/ü/\udcff".encode("utf-8", "surrogateescape")
    kv = _parse_kv({"key": base64.b64encode(raw).decode(), "mod_revision": "7"})
    assert kv.key.encode("utf-8", "surrogateescape") == raw
    assert _b64(kv.key) == base64.b64encode(raw).decode()
    assert kv.mod_revision == 7 and kv.value == b""
