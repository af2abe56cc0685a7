"""bench-vs-go's summary and generated doc section (pure helpers; the benchmark itself is run
by `make bench-vs-go`, never by the test suite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from load import bench_vs_go
from load.bench_vs_go import BEGIN, END, Run, render, summarize


def _pair(go: dict[str, float], py: dict[str, float], load: float = 0.1) -> dict[str, Run]:
    return {
        "go": Run("go", "gob", (load, load, load), dict(go)),
        "py": Run("py", "gob", (load, load, load), dict(py)),
    }


def test_ratio_median_and_range_over_pairs() -> None:
    pairs = [
        _pair({"join_cpu_s": 2.0}, {"join_cpu_s": 1.0}),
        _pair({"join_cpu_s": 2.0}, {"join_cpu_s": 3.0}),
        _pair({"join_cpu_s": 1.0}, {"join_cpu_s": 1.0}),
    ]
    row = next(r for r in summarize(pairs, "gob") if r["figure"] == "join_cpu_s")
    assert row["ratio_median"] == 1.0
    assert (row["ratio_min"], row["ratio_max"]) == (0.5, 1.5)
    assert row["go_median"] == 2.0 and row["py_median"] == 1.0
    assert not row["provisional"]


def test_client_dependent_figures_are_provisional_only_with_different_clients() -> None:
    pairs = [_pair({"join_s": 1.0, "join_cpu_s": 1.0}, {"join_s": 2.0, "join_cpu_s": 1.0})]
    light = {r["figure"]: r["provisional"] for r in summarize(pairs, "light")}
    gob = {r["figure"]: r["provisional"] for r in summarize(pairs, "gob")}
    assert light["join_s"] and not light["join_cpu_s"]
    assert not gob["join_s"]  # positive control: the same client makes it a real ratio


def _result(pairs: list[dict[str, Run]], idle_load: float = 0.5) -> dict[str, Any]:
    return {
        "date": "d",
        "machine": "m",
        "args": {
            "endpoints": 10,
            "clients": 2,
            "rate": 1.0,
            "txn_ms": 5.0,
            "duration": 1.0,
            "cpu": "1",
            "idle_load": idle_load,
        },
        "gomaxprocs": "g",
        "py_client_label": "gobload",
        "pairs": [{k: vars(r) for k, r in p.items()} for p in pairs],
        "summary": summarize(pairs, "gob"),
        "plot": "p.png",
        "json": "x.json",
    }


def test_runs_under_load_are_marked() -> None:
    busy = render(_result([_pair({"join_cpu_s": 1}, {"join_cpu_s": 1}, load=3.0)]))
    assert "started under load" in busy
    idle = render(_result([_pair({"join_cpu_s": 1}, {"join_cpu_s": 1}, load=0.1)]))
    assert "started under load" not in idle and "idle for every run" in idle


def test_invalid_runs_are_listed() -> None:
    pairs = [_pair({"join_cpu_s": 1}, {"join_cpu_s": 1})]
    pairs[0]["py"].valid = False
    pairs[0]["py"].notes.append("delivered 0.5 < 99 % of offered")
    assert "Invalid runs (1)" in render(_result(pairs))
    assert "Invalid runs" not in render(_result([_pair({"join_cpu_s": 1}, {"join_cpu_s": 1})]))


def test_write_doc_replaces_only_its_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# B\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    monkeypatch.setattr(bench_vs_go, "DOC", doc)
    bench_vs_go.write_doc(f"{BEGIN}\nnew\n{END}")
    text = doc.read_text()
    assert "new" in text and "old" not in text
    assert text.startswith("# B\n\nbefore") and text.endswith("after\n")
