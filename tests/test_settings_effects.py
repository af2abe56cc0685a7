"""Settings whose effect no other test showed: each test sets the parameter the way an operator
does and checks what it changes, next to the default (the positive control)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import structlog
import trio
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, REGISTRY
from structlog.testing import capture_logs

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha import logs, metrics
from typha.app import Typha, cache_settings, metrics_routes, metrics_settings, server_settings
from typha.cache.feed import CacheFeed, encode_update
from typha.config import NO_EFFECT, load_config
from typha.model.keys import SyncerType
from typha.protocol.gob.encoder import ENCODE_COUNTS
from typha.server.gob_codec import gob_codec
from typha.sync.base import Update
from typha.sync.memory import MemoryDatastore


def _cfg(**env: str):  # type: ignore[no-untyped-def]
    return load_config(environ={f"TYPHA_{k.upper()}": v for k, v in env.items()})


def _feed(**env: str) -> CacheFeed:
    return CacheFeed.from_settings(cache_settings(_cfg(**env)), syncers=[SyncerType.FELIX])


def _apply(feed: CacheFeed, n: int) -> list:  # type: ignore[type-arg]
    view = feed.views[SyncerType.FELIX]
    return view.apply([encode_update(Update(*wep(i))) for i in range(n)])


def test_snapshot_cache_max_batch_size_splits_breadcrumbs() -> None:
    assert len(_apply(_feed(), 5)) == 1  # default 100
    assert len(_apply(_feed(SnapshotCacheMaxBatchSize="2"), 5)) == 3


def test_server_max_fall_behind_secs_bounds_the_history_by_age() -> None:
    default = _feed().views[SyncerType.FELIX]
    short = _feed(ServerMaxFallBehindSecs="2").views[SyncerType.FELIX]
    for view in (default, short):
        now = [0.0]
        view.clock = lambda now=now: now[0]
        view.apply([encode_update(Update(*wep(0)))])
        now[0] = 3.0
        view.apply([encode_update(Update(*wep(1)))])
    assert default.oldest_seq == 1  # 300 s keep both
    assert short.oldest_seq == 2  # the first aged out after 2 s


def test_server_max_message_size_splits_gob_deltas() -> None:
    (crumb,) = _apply(_feed(), 5)
    for size, messages in (("100", 1), ("2", 3)):
        settings = server_settings(_cfg(ServerMaxMessageSize=size))
        codec = gob_codec(False, settings.max_kvs_per_message)
        before = ENCODE_COUNTS.messages
        codec.crumb_bytes(crumb)
        assert ENCODE_COUNTS.messages - before == messages


def test_new_client_grace_period_reaches_every_connection() -> None:
    # What it does to the history: tests/cache/test_history_hold.py.
    assert server_settings(_cfg()).connection.new_client_grace == 300
    grace = server_settings(_cfg(ServerNewClientFallBehindGracePeriod="7")).connection
    assert grace.new_client_grace == 7


@pytest.mark.parametrize("interval", [1.0, 0.005])
async def test_fanout_interval_coalesces_a_burst_into_one_write(interval: float) -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(10)))
    cfg = make_config(ServerFanoutIntervalSecs=interval)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1")
        nursery.start_soon(client.run)
        await client.in_sync.wait()
        (conn,) = typha.server.connections.values()
        # Let the window opened by the initial sync's breadcrumbs pass first.
        await trio.sleep(interval + 0.2)
        await wait_until(lambda: conn.write_token.free, 5)
        before = metrics.fanout_direct_writes.labels("felix")._value.get()
        for rev in range(1, 6):  # five updates within the one-second window
            ds.set(*wep(rev, rev=rev))
            await trio.sleep(0.05)
        await wait_until(lambda: client.state == ds.data, 5)
        writes = metrics.fanout_direct_writes.labels("felix")._value.get() - before
        if interval == 1.0:
            assert writes == 1
        else:  # positive control: the default 5 ms window writes updates 50 ms apart
            assert writes > 1
        nursery.cancel_scope.cancel()


def _families() -> set[str]:
    _, _, body = metrics_routes(metrics_settings(_cfg()))["/metrics"]()
    return {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")}


def test_prometheus_runtime_and_process_collectors_can_be_turned_off() -> None:
    try:
        on = _families()
        assert any(f.startswith("process_") for f in on)
        assert any(f.startswith("python_gc_") for f in on)
        metrics_routes(metrics_settings(_cfg(PrometheusProcessMetricsEnabled="false")))
        off = _families()
        assert not any(f.startswith("process_") for f in off)
        assert any(f.startswith("python_gc_") for f in off)
        metrics_routes(metrics_settings(_cfg(PrometheusGoMetricsEnabled="false")))
        assert not any(f.startswith(("python_gc_", "python_info")) for f in _families())
    finally:  # the collectors are process-wide: put them back for the other tests
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            with contextlib.suppress(ValueError):
                REGISTRY.register(collector)


def test_a_setting_with_no_effect_is_warned_about_at_start() -> None:
    with capture_logs() as quiet:
        Typha(make_config(DatastoreInMemory=True))
    assert not [e for e in quiet if e["event"] == "setting has no effect"]
    with capture_logs() as logs:
        Typha(make_config(DatastoreInMemory=True, ServerMinBatchingAgeThresholdSecs=0.5))
    (warning,) = [e for e in logs if e["event"] == "setting has no effect"]
    assert warning["log_level"] == "warning"
    assert warning["setting"] == "ServerMinBatchingAgeThresholdSecs"
    assert warning["reason"] == NO_EFFECT["ServerMinBatchingAgeThresholdSecs"]


async def test_shutdown_drop_interval_max_caps_the_gap_between_drops() -> None:
    # With a 100 s shutdown timeout, ten clients would be dropped 9.5 s apart; the cap makes
    # it 50 ms. (Spread over the timeout without the cap: test_drain_says_goodbye_to_everyone_
    # spread_over_time in tests/server/test_core_integration.py.)
    ds = MemoryDatastore(dict(wep(i) for i in range(5)))
    cfg = make_config(ShutdownTimeoutSecs=100, ShutdownConnectionDropIntervalMaxSecs=0.05)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        clients = [SyncClient([typha.address], f"n{i}") for i in range(10)]
        for client in clients:
            nursery.start_soon(client.run)
        for client in clients:
            await client.in_sync.wait()
        started = trio.current_time()
        with trio.fail_after(5):
            await typha.server.drain()
        assert trio.current_time() - started < 5
        nursery.cancel_scope.cancel()


def test_debug_disable_log_dropping_blocks_instead_of_dropping() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        for value, maxsize in (("false", 1000), ("true", 0)):  # 0: unbounded, put() blocks
            logs.configure_from(
                _cfg(DebugDisableLogDropping=value, LogFilePath="none", LogSeveritySys="none")
            )
            (handler,) = root.handlers
            assert handler.queue.maxsize == maxsize  # type: ignore[attr-defined]
            assert handler._block is (value == "true")  # type: ignore[attr-defined]
    finally:
        logs.flush()
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        structlog.reset_defaults()


def test_tombstone_retention_secs_bounds_how_long_deletions_are_remembered() -> None:
    kept = {}
    for value in ("3600", "5"):
        view = _feed(TombstoneRetentionSecs=value).views[SyncerType.FELIX]
        now = [0.0]
        view.clock = lambda now=now: now[0]
        key, value_ = wep(0)
        view.apply([encode_update(Update(key, value_))])
        view.apply([encode_update(Update(key, None))])
        now[0] = 10.0
        view.apply([encode_update(Update(*wep(1)))])
        kept[value] = view.tombstone_count
    assert kept == {"3600": 1, "5": 0}


def test_datastore_type_chooses_the_datastore_and_the_gob_resource_versions() -> None:
    from typha.app import build_datastore, datastore_settings
    from typha.sync.etcd import EtcdDatastore

    etcd, kube = _cfg(), _cfg(DatastoreType="kubernetes")
    assert isinstance(build_datastore(datastore_settings(etcd)), EtcdDatastore)
    assert datastore_settings(kube).kind == "kubernetes" and datastore_settings(kube).etcd is None
    assert not server_settings(etcd).v3_resource_versions
    assert server_settings(kube).v3_resource_versions


def test_check_config_names_the_settings_without_effect() -> None:
    from tests.test_cli import run

    quiet = run("typha.cli", "check-config")
    assert quiet.returncode == 0 and "has no effect" not in quiet.stderr
    out = run("typha.cli", "check-config", env={"TYPHA_DEBUGPORT": "6060"})
    assert out.returncode == 0
    assert f"DebugPort has no effect: {NO_EFFECT['DebugPort']}" in out.stderr
