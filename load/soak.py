"""`make soak`: one hour at 300 clients and 50 updates/s against a local stack, sampling
Typha's RSS every 10 s; reports the RSS drift (end minus the level after warm-up, and the
least-squares slope per hour). Writes .load-results/soak.json and soak.png.

`--duration` shortens it (a 120 s run exercises the same code)."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from load.stack import local_stack

RESULTS = Path(".load-results")


def slope_per_hour(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(r for _, r in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    cov = sum((t - mx) * (r - my) for t, r in samples)
    return cov / var * 3600 if var else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3600)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--warmup", type=float, default=None, help="default: 10%% of duration")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    warmup = args.warmup if args.warmup is not None else args.duration * 0.1
    samples: list[tuple[float, int]] = []
    with local_stack(results=RESULTS / "soak") as stack:
        typha = stack.typhas[0]
        proc = psutil.Process(typha.proc.pid)
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.wait(10):
                samples.append((time.monotonic() - started, proc.memory_info().rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cmd = [
            sys.executable,
            "-m",
            "load.typha_load",
            "--typha",
            typha.address,
            "--etcd",
            stack.etcd_url,
            "--clients",
            str(args.clients),
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration),
            "--full-clients",
            "10",
            "--typha-pid",
            str(typha.proc.pid),
            "--json",
            str(RESULTS / "soak-load.json"),
            "--plot",
            str(RESULTS / "soak-load.png"),
        ]
        subprocess.run(cmd, check=False)
        stop.set()
        sampler.join()
    after = [(t, r) for t, r in samples if t >= warmup]
    load: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        load = json.loads((RESULTS / "soak-load.json").read_text())
    result = {
        "duration_s": args.duration,
        "clients": args.clients,
        "rate": args.rate,
        "rss_after_warmup_mb": round(after[0][1] / 1e6, 1) if after else None,
        "rss_end_mb": round(samples[-1][1] / 1e6, 1) if samples else None,
        "rss_drift_mb": round((after[-1][1] - after[0][1]) / 1e6, 2) if after else None,
        "rss_slope_mb_per_hour": round(slope_per_hour(after) / 1e6, 2),
        "samples": len(samples),
        "load": {
            k: load.get(k)
            for k in (
                "clients_in_sync",
                "update_latency_ms",
                "lost_keys",
                "ghost_keys",
                "typha_cpu_s",
            )
        },
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([t / 60 for t, _ in samples], [r / 1e6 for _, r in samples])
        ax.set_xlabel("minutes")
        ax.set_ylabel("Typha RSS (MB)")
        ax.set_title(f"soak: {args.clients} clients, {args.rate} updates/s")
        fig.tight_layout()
        fig.savefig(RESULTS / "soak.png", dpi=100)
    except ImportError:
        pass
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
