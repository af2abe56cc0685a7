"""A warm start freezes the loaded cache out of the collector's reach (typha.app,
``Typha._warm_start``), and does not collect while loading it: only while Typha starts
(``gc_tuning.relaxed``), never for a Typha made in a running process (tests, the demo)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.typha_harness import wep
from typha import gc_tuning
from typha.app import Typha
from typha.cache import persist
from typha.cache.feed import CacheFeed
from typha.model.keys import SyncerType
from typha.sync.base import ResyncFinished, ResyncStarted, Update, Updates

from ..peers.ports import free_ports
from .test_warm_restart import config

KEYS = 2_000


@pytest.fixture
def cache_file(tmp_path: Path) -> Path:
    feed = CacheFeed.create()
    feed.apply(ResyncStarted())
    feed.apply(Updates([Update(*wep(i), revision=str(10 + i)) for i in range(KEYS)]))
    feed.apply(ResyncFinished(None))
    path = tmp_path / "typha-cache.msgpack"
    persist.write_cache_file(str(path), persist.snapshot_for_save(feed, epoch=3, clean=True))
    return path


@pytest.fixture
def collector() -> Iterator[list[int]]:
    """The generations of the collections that ran (a gc callback); the collector's state is
    put back afterwards (unfrozen, thresholds restored)."""
    runs: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.collect()
    gc.callbacks.append(seen)
    try:
        yield runs
    finally:
        gc.callbacks.remove(seen)
        gc_tuning.restore()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        assert gc.isenabled()


def watch_restore(monkeypatch: pytest.MonkeyPatch, collector: list[int]) -> list[int]:
    """The collections that ran while ``persist.restore`` did (recorded around the real one)."""
    during: list[int] = []
    real = persist.restore

    def restore(*args: Any) -> Any:
        before = len(collector)
        try:
            return real(*args)
        finally:
            during.extend(collector[before:])

    monkeypatch.setattr(persist, "restore", restore)
    return during


def test_a_starting_typha_freezes_what_it_loaded(
    cache_file: Path, collector: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    during = watch_restore(monkeypatch, collector)
    gc_tuning.relax_for_loading()
    # The load makes far more objects than this young threshold lets pass: it would collect.
    gc.set_threshold(1000, *gc.get_threshold()[1:])
    typha = Typha(config(port, cache_file))
    view = typha.feed.views[SyncerType.FELIX]
    assert len(view) == KEYS
    assert during == []  # no collection during the load
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= KEYS  # at least every restored entry
    entry = next(iter(view.state.values()))
    assert not any(entry is obj for obj in gc.get_objects())  # out of the collector's reach


def test_a_typha_made_in_a_running_process_freezes_nothing(
    cache_file: Path, collector: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    during = watch_restore(monkeypatch, collector)
    assert not gc_tuning.relaxed()
    gc.set_threshold(1000, *gc.get_threshold()[1:])
    typha = Typha(config(port, cache_file))
    assert len(typha.feed.views[SyncerType.FELIX]) == KEYS
    assert gc.get_freeze_count() == 0
    assert during  # the collector ran as usual during the load (the control for the above)
    entry = next(iter(typha.feed.views[SyncerType.FELIX].state.values()))
    assert any(entry is obj for obj in gc.get_objects())
