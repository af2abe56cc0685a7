"""`make load`: the load matrix — 100 / 500 / 1,000 clients x 100 / 1,000 updates/s, 60 s a
cell — each cell a `typha-load` run against a fresh local stack (real etcd + `typha serve`).

Writes .load-results/matrix/<cell>.json and .png, and matrix.md (the table for
docs/benchmarks.md). `--quick` runs a 10 s, 20/50-client smoke version of the same code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from load.stack import local_stack, typha_load_command

RESULTS = Path(".load-results") / "matrix"


def run_cell(clients: int, rate: int, duration: float, processes: int) -> dict[str, Any]:
    name = f"c{clients}-r{rate}"
    with local_stack(results=RESULTS) as stack:
        typha = stack.typhas[0]
        cmd = typha_load_command(
            stack,
            typha,
            clients=clients,
            rate=rate,
            duration=duration,
            full_clients=min(10, clients),
            out=RESULTS / name,
            processes=processes,
        )
        print(f"== {name}: {' '.join(cmd[3:])}", flush=True)
        subprocess.run(cmd, check=False)
    try:
        return json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {"error": "no result"}


def table(cells: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| clients | rate/s | in sync | time to all in sync (s) | latency p50 / p99 / max (ms) "
        "| client updates/s | lost | ghost | Typha CPU (s) | Typha RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in cells.items():
        c, rate = name[1:].split("-r")
        lat = r.get("update_latency_ms", {})
        rss = r.get("typha_rss_bytes") or 0
        rows.append(
            f"| {c} | {rate} | {r.get('clients_in_sync')}/{r.get('clients')} "
            f"| {r.get('time_to_all_in_sync_s')} "
            f"| {lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} "
            f"| {r.get('client_updates_per_s')} | {r.get('lost_keys')} | {r.get('ghost_keys')} "
            f"| {r.get('typha_cpu_s')} | {round(rss / 1e6, 1) if rss else '-'} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s cells, 20/50 clients")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.quick:
        grid, duration = [(20, 100), (50, 100)], 10.0
    else:
        grid = [(c, r) for c in (100, 500, 1000) for r in (100, 1000)]
        duration = 60.0
    cells = {f"c{c}-r{r}": run_cell(c, r, duration, args.processes) for c, r in grid}
    text = table(cells)
    (RESULTS / "matrix.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
