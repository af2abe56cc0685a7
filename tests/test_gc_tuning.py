"""The collector's young threshold during the first load (typha.gc_tuning)."""

from __future__ import annotations

import gc

from typha import gc_tuning


def test_relax_then_restore() -> None:
    before = gc.get_threshold()
    try:
        gc_tuning.relax_for_loading()
        assert gc_tuning.relaxed()
        assert gc.get_threshold()[0] >= gc_tuning.LOADING_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        gc_tuning.relax_for_loading()  # twice: still restores the original
        gc_tuning.restore()
        assert gc.get_threshold() == before
        assert not gc_tuning.relaxed()
        gc_tuning.restore()  # no-op without a relax
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
