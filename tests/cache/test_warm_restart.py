"""Warm restart in process: a restarted Typha loads its cache file, keeps its epoch and serves
reconnecting clients by resume, without snapshots."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import wait_until, wep
from typha import app, metrics
from typha.app import Typha, build_feed
from typha.cache import persist
from typha.config import load_config
from typha.model.keys import SyncerType
from typha.sync.memory import MemoryDatastore

from ..peers.ports import free_ports


def config(port: int, path: Path):  # type: ignore[no-untyped-def]
    return load_config(
        environ={},
        overrides={
            "ServerPort": port,
            "ServerHost": "127.0.0.1",
            "LogFilePath": "none",
            "CacheFilePath": str(path),
            "ShutdownTimeoutSecs": 0.5,
        },
    )


async def run_until_synced(typha: Typha, nursery: trio.Nursery) -> None:
    await nursery.start(typha.run)
    await wait_until(lambda: typha.feed.in_sync)


async def test_restart_resumes_clients_without_snapshots(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    ds = MemoryDatastore(dict(wep(i) for i in range(500)))
    clients = [SyncClient([f"127.0.0.1:{port}"], f"n{i}", backoff_cap=0.3) for i in range(20)]
    loads_before = metrics.warm_restart_loads.labels("loaded")._value.get()
    async with trio.open_nursery() as outer:
        first = Typha(config(port, path), ds)
        async with trio.open_nursery() as n1:
            await run_until_synced(first, n1)
            for c in clients:
                outer.start_soon(c.run)
            await wait_until(lambda: all(c.state == ds.data for c in clients))
            ds.set(*wep(1, rev=1))
            await wait_until(lambda: all(c.state == ds.data for c in clients))
            await first.drain_and_stop()  # saves the cache before and after the drain
        assert path.exists()
        # While Typha is down, the datastore changes.
        ds.set(*wep(2, rev=2))
        ds.delete(wep(3)[0])

        second = Typha(config(port, path), ds)
        assert second.server.epoch == first.server.epoch
        assert second.start_revision is not None
        async with trio.open_nursery() as n2:
            await run_until_synced(second, n2)
            await wait_until(lambda: all(c.state == ds.data for c in clients), 20)
            assert all(c.stats.snapshots == 1 for c in clients)
            assert all(c.stats.resumes >= 1 for c in clients)
            n2.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    assert metrics.warm_restart_loads.labels("loaded")._value.get() == loads_before + 1


async def test_corrupt_cache_file_is_ignored_and_clients_get_snapshots(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    path.write_bytes(b"\x00garbage")
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    typha = Typha(config(port, path), ds)
    assert typha.start_revision is None
    async with trio.open_nursery() as nursery:
        await run_until_synced(typha, nursery)
        client = SyncClient([f"127.0.0.1:{port}"], "n")
        nursery.start_soon(client.run)
        await wait_until(lambda: client.state == ds.data)
        assert client.stats.snapshots == 1
        nursery.cancel_scope.cancel()
    # Positive control: a good file round-trips.
    snap = persist.snapshot_for_save(typha.feed, typha.server.epoch)
    persist.write_cache_file(str(path), snap)
    assert persist.read_cache_file(str(path))["epoch"] == typha.server.epoch


def _cache_file(**fields: object) -> bytes:
    """A cache file with the given top-level entries, ``version`` first as Typha writes it."""
    return msgpack.packb({"version": persist.FORMAT_VERSION, **fields}, use_bin_type=True)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # Before: AttributeError escaped from the constructor; Typha did not start.
        (lambda p: p.write_bytes(_cache_file(epoch=1, saved_at=0.0, views=[1, 2])), "layout"),
        # Before: IsADirectoryError escaped; Typha did not start.
        (lambda p: p.mkdir(), "not a regular file"),
        # msgpack refuses nesting beyond 1,024 levels itself (verified, not bounded again).
        (
            lambda p: p.write_bytes(
                b"\x82\xa7version"
                + bytes([persist.FORMAT_VERSION])
                + b"\xa5views"
                + b"\x91" * 2000
                + b"\x01"
            ),
            "StackError",
        ),
        # The version is checked before the rest is read.
        (
            lambda p: p.write_bytes(
                msgpack.packb({"version": 99, "views": "x" * 1000}) + b"\xc1garbage"
            ),
            "version 99",
        ),
    ],
    ids=["bad-layout", "directory", "too-deep", "wrong-version"],
)
async def test_unusable_cache_file_is_logged_and_typha_starts_cold(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    make(path)
    with pytest.raises(persist.CacheFileError, match=reason):
        persist.read_cache_file(str(path)) and persist.restore(
            build_feed(config(port, path)), persist.read_cache_file(str(path)) or {}
        )
    corrupt_before = metrics.warm_restart_loads.labels("corrupt")._value.get()
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    typha = Typha(config(port, path), ds)
    assert typha.start_revision is None and typha.feed.views[SyncerType.FELIX].state == {}
    assert metrics.warm_restart_loads.labels("corrupt")._value.get() == corrupt_before + 1
    async with trio.open_nursery() as nursery:
        await run_until_synced(typha, nursery)
        client = SyncClient([f"127.0.0.1:{port}"], "n")
        nursery.start_soon(client.run)
        await wait_until(lambda: client.state == ds.data)  # control: it serves, cold
        nursery.cancel_scope.cancel()


def test_oversized_cache_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "typha-cache.msgpack"
    with open(path, "wb") as f:  # sparse: costs no disk, and must cost no memory either
        f.truncate(persist.MAX_CACHE_FILE_BYTES + 1)
    with pytest.raises(persist.CacheFileError, match=r"bytes, more than a cache file may have"):
        persist.read_cache_file(str(path))
    # Positive control: a file within the limit is read.
    path.write_bytes(_cache_file(epoch=7))
    assert persist.read_cache_file(str(path)) == {"version": persist.FORMAT_VERSION, "epoch": 7}


async def test_sigterm_during_a_periodic_save_still_drains_and_ends_with_a_clean_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the periodic save is held inside its worker thread, SIGTERM arrives, and
    the save before the drain fails (a disk error). Before: the drain's save ran alongside the
    held one (both write ``{path}.tmp.{pid}`` and race on the rename) and its failure ended the
    process with exit 1 before any client was drained."""
    (port,) = free_ports(1)
    path = tmp_path / "typha-cache.msgpack"
    cfg = load_config(
        environ={},
        overrides={
            "ServerPort": port,
            "ServerHost": "127.0.0.1",
            "LogFilePath": "none",
            "CacheFilePath": str(path),
            "CacheSaveIntervalSecs": 1,
            "ShutdownTimeoutSecs": 0.5,
        },
    )
    real_write = persist.write_cache_file
    calls: list[dict[str, Any]] = []
    held, signalled = threading.Event(), threading.Event()
    lock = threading.Lock()

    def write(path_: str, snapshot: dict[str, Any], **kwargs: Any) -> int:
        call = {"clean": snapshot["clean"], "start": time.monotonic(), "end": None}
        with lock:
            calls.append(call)
            n = len(calls)
        try:
            if n == 1:  # the first periodic save: hold it until SIGTERM has been handled
                held.set()
                signalled.wait(10)
                time.sleep(1.0)  # the drain's first save would start now, if it could
            elif n == 2:
                raise OSError(28, "No space left on device")
            return real_write(path_, snapshot, **kwargs)
        finally:
            call["end"] = time.monotonic()

    monkeypatch.setattr(persist, "write_cache_file", write)
    ds = MemoryDatastore(dict(wep(i) for i in range(50)))
    typha = Typha(cfg, ds)
    monkeypatch.setattr(app, "Typha", lambda *_: typha)  # serve() builds this one
    clients = [SyncClient([f"127.0.0.1:{port}"], f"n{i}", backoff_cap=0.3) for i in range(5)]
    served = trio.Event()

    async def run_serve() -> None:
        await app.serve(cfg, ds)
        served.set()  # it returned by itself, drain and final save done

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_serve)
        for c in clients:
            nursery.start_soon(c.run)
        await wait_until(lambda: all(c.state == ds.data for c in clients))
        await trio.to_thread.run_sync(held.wait, 10)
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(0.5)  # the signal is handled and the drain's first save is due
        signalled.set()
        with trio.fail_after(20):
            await served.wait()
        nursery.cancel_scope.cancel()
    assert all(c.stats.last_goodbye == "server shutting down" for c in clients)  # drained
    spans = sorted((c["start"], c["end"]) for c in calls)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), f"saves overlap: {spans}"
    assert calls[-1]["clean"] is True and len(calls) == 3, calls
    assert persist.read_cache_file(str(path))["clean"] is True
    assert not list(tmp_path.glob("*.tmp.*"))
