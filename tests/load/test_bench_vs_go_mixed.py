"""bench-vs-go's tagged sections (several shapes side by side in the doc) and its mixed mode
(250 gob + 250 msgpack clients on typha-py): pure helpers, the benchmark is never run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from load import bench_vs_go
from load.bench_vs_go import BEGIN, END, Args, Run, markers, render


def _args(**kw: object) -> Args:
    base = dict(
        endpoints=10,
        clients=5,
        rate=1.0,
        duration=1.0,
        txn_ms=5.0,
        cpu="1",
        py_client="gob",
        idle_load=0.5,
        sync_timeout=1.0,
    )
    return Args(**(base | kw))  # type: ignore[arg-type]


def test_mixed_mode_splits_typha_pys_clients_and_only_its() -> None:
    mixed = _args(mixed=True)
    assert mixed.client_groups("py") == [("gob", 2), ("light", 3)]
    assert mixed.client_groups("go") == [("gob", 5)]
    # Positive control: without --mixed, one group of the chosen client.
    assert _args().client_groups("py") == [("gob", 5)]
    assert _args(py_client="light").client_groups("py") == [("light", 5)]


def test_a_tagged_section_leaves_the_others_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b500, e500 = markers("500")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# B\n\n{BEGIN}\ndefault\n{END}\n\n{b500}\nold\n{e500}\n\nafter\n")
    monkeypatch.setattr(bench_vs_go, "DOC", doc)
    bench_vs_go.write_doc(f"{b500}\nnew\n{e500}", "500")
    text = doc.read_text()
    assert "default" in text and "new" in text and "old" not in text
    bench_vs_go.write_doc(f"{BEGIN}\nfresh\n{END}")
    text = doc.read_text()
    assert "fresh" in text and "default" not in text and "new" in text


def _mixed_run(valid: bool, load: float) -> dict[str, object]:
    figures = {"join_cpu_s": 1.5, "delivered_ratio_gob": 1.0, "delivered_ratio_light": 0.98}
    figures |= {"p99_ms_gob": 40.0, "p99_ms_light": 30.0, "load_after": 2.0}
    run = Run("py", "gob+light", (load, load, load), figures, valid)
    if not valid:
        run.notes.append("light: delivered 0.98 < 99 % of offered")
    return vars(run)


def test_mixed_render_reports_each_kind_and_invalid_runs() -> None:
    result = {
        "date": "d",
        "machine": "m",
        "args": vars(_args(mixed=True, clients=500, tag="mixed")),
        "runs": [_mixed_run(True, 0.2), _mixed_run(False, 3.0)],
        "json": "x.json",
    }
    text = render(result)
    begin, end = markers("mixed")
    assert text.startswith(begin) and text.endswith(end)
    assert "250 gob clients" in text and "250 msgpack clients" in text
    assert "| steady: write → gob client p99 (ms) | 40 |" in text
    assert "| steady: write → msgpack client p99 (ms) | 30 |" in text
    assert "Invalid runs (1)" in text and "1 of 2 runs started under load" in text
    assert "(after 2.00)" in text
