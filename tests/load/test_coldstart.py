"""load.coldstart's pure helpers: the server-log phases and the generated doc section (the
benchmark itself is run by hand, never by the test suite)."""

from __future__ import annotations

import datetime
from pathlib import Path

from load.coldstart import BEGIN, END, log_phases, render


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_log_phases_first_occurrence_after_exec(tmp_path: Path) -> None:
    exec_wall = 1_800_000_000.0
    log = tmp_path / "py-typha.log"
    log.write_text(
        "\n".join(
            [
                f"{_stamp(exec_wall + 0.5)} [info     ] sync server listening          port=1",
                f"{_stamp(exec_wall + 0.6)} [info     ] HTTP Request: POST http://x/v3/kv/range",
                f"{_stamp(exec_wall + 0.7)} [info     ] etcd resync started            r=1",
                f"{_stamp(exec_wall + 2.0)} [info     ] resync finished                keys={{}}",
                f"{_stamp(exec_wall + 9.0)} [info     ] resync finished                keys={{}}",
                "a line that is not a log record",
            ]
        )
    )
    phases = log_phases(log, exec_wall)
    assert set(phases) == {"listening", "list_started", "cache_in_sync"}
    assert abs(phases["listening"] - 0.5) < 1e-3
    assert abs(phases["list_started"] - 0.7) < 1e-3
    assert abs(phases["cache_in_sync"] - 2.0) < 1e-3  # the first one, not the later resync


def test_render_ratios_per_pair() -> None:
    out = {
        "endpoints": 20000,
        "py_env": "runtime",
        "pairs": [
            {"load": 0.2, "py": 2.0, "go": 1.0, "warm": 0.5, "ratio_cold": 2.0, "ratio_warm": 0.5},
            {"load": 0.3, "py": 3.0, "go": 2.0, "warm": 0.8, "ratio_cold": 1.5, "ratio_warm": 0.4},
            {"load": 0.4, "py": 1.0, "go": 1.0, "warm": 0.6, "ratio_cold": 1.0, "ratio_warm": 0.6},
        ],
        "runs": {
            "cold_start_py_cpu_s": [2.0, 2.0, 2.0],
            "cold_start_go_cpu_s": [1.0, 1.0, 1.0],
            "warm_restart_py_cpu_s": [0.5, 0.5, 0.5],
        },
        "median": {"cold_start_py_s": 2.0, "cold_start_go_s": 1.0, "convert_s": 0.5},
        "top_imports_ms": [("trio", 80.0)],
    }
    text = render(out)
    assert text.startswith(BEGIN) and text.endswith(END)
    assert "| **cold start typha-py / Go** (exec → client in sync) | 1.50 [1.00-2.00] |" in text
    assert "| **warm restart typha-py / Go cold start** | 0.50 [0.40-0.60] |" in text
    assert "typha-py / Go (medians) | 2.00 |" in text
    assert "taken under load" not in text  # every pair below 0.5
    out["pairs"][0]["load"] = 3.0
    assert "taken under load" in render(out)  # positive control
