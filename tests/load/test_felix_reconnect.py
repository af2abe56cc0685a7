"""The pure part of load/felix_reconnect.py: the per-kind summary of its rounds."""

from __future__ import annotations

from load.felix_reconnect import summarize


def _round(kind: str, programmed: float, failed: int, ok: bool = True) -> dict:
    return {
        "kind": kind,
        "detect_s": 0.01,
        "resync_s": programmed / 2,
        "programmed_s": programmed,
        "failed_attempts": failed,
        "checks_passed": ok,
        "loadavg_1m": programmed,
    }


def test_summary_is_median_and_range_per_kind_with_direct_rounds_apart() -> None:
    runs = [
        _round("calico", 0.2, 0),
        _round("calico", 0.4, 1),
        _round("calico", 0.3, 0),
        _round("typha-py", 9.0, 0, ok=False),
    ]
    s = summarize(runs, "calico")
    assert s["rounds"] == 3 and s["rounds_direct"] == 2
    assert s["programmed_s"] == {"median": 0.3, "min": 0.2, "max": 0.4}
    assert s["programmed_s_direct"] == {"median": 0.25, "min": 0.2, "max": 0.3}
    assert s["failed_attempts"]["max"] == 1
    assert s["loadavg_1m"] == [0.2, 0.4]
    assert s["all_checks_passed"] is True
    assert summarize(runs, "typha-py")["all_checks_passed"] is False
