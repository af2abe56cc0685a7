"""`make soak`: one hour at 300 clients and 50 updates/s against a local stack, sampling
Typha's RSS every 10 s; reports the RSS drift (end minus the level after warm-up, and the
least-squares slope per hour) and the felix view's tombstone count. Writes
.load-results/soak.json and soak.png (`--name` changes the stem; `--env` passes Typha settings).

`--duration` shortens it (a 120 s run exercises the same code)."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from load.stack import local_stack, typha_load_command

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


def scrape_gauge(url: str, name: str, labels: str) -> float | None:
    """One sample from a Prometheus text endpoint (None if unreachable or absent)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    prefix = f"{name}{{{labels}}} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3600)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--warmup", type=float, default=None, help="default: 10%% of duration")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="TYPHA_X=VALUE",
        help="extra Typha setting (repeatable), e.g. TYPHA_TOMBSTONERETENTIONSECS=600",
    )
    parser.add_argument("--name", default="soak", help="result file stem (default: soak)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    RESULTS.mkdir(exist_ok=True)
    warmup = args.warmup if args.warmup is not None else args.duration * 0.1
    samples: list[tuple[float, int]] = []
    tombstones: list[tuple[float, float]] = []
    with local_stack(results=RESULTS / args.name, extra_env=extra_env) as stack:
        typha = stack.typhas[0]
        proc = psutil.Process(typha.proc.pid)
        stop = threading.Event()
        started = time.monotonic()
        metrics_url = f"http://127.0.0.1:{typha.metrics_port}/metrics"

        def sample() -> None:
            while not stop.wait(10):
                now = time.monotonic() - started
                samples.append((now, proc.memory_info().rss))
                count = scrape_gauge(metrics_url, "typha_cache_tombstones", 'syncer="felix"')
                if count is not None:
                    tombstones.append((now, count))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cmd = typha_load_command(
            stack,
            typha,
            clients=args.clients,
            rate=args.rate,
            duration=args.duration,
            full_clients=10,
            out=RESULTS / f"{args.name}-load",
        )
        subprocess.run(cmd, check=False)
        stop.set()
        sampler.join()
    after = [(t, r) for t, r in samples if t >= warmup]
    load: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        load = json.loads((RESULTS / f"{args.name}-load.json").read_text())
    result = {
        "duration_s": args.duration,
        "clients": args.clients,
        "rate": args.rate,
        "typha_env": extra_env,
        "rss_after_warmup_mb": round(after[0][1] / 1e6, 1) if after else None,
        "rss_end_mb": round(samples[-1][1] / 1e6, 1) if samples else None,
        "rss_drift_mb": round((after[-1][1] - after[0][1]) / 1e6, 2) if after else None,
        "rss_slope_mb_per_hour": round(slope_per_hour(after) / 1e6, 2),
        "samples": len(samples),
        "felix_tombstones_max": max((n for _, n in tombstones), default=None),
        "felix_tombstones_end": tombstones[-1][1] if tombstones else None,
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
        ax.plot([t / 60 for t, _ in samples], [r / 1e6 for _, r in samples], label="RSS")
        ax.set_xlabel("minutes")
        ax.set_ylabel("Typha RSS (MB)")
        title = f"soak: {args.clients} clients, {args.rate:g} updates/s"
        ax.set_title(" ".join([title, *args.env]))
        if tombstones:
            ax2 = ax.twinx()
            ax2.plot(
                [t / 60 for t, _ in tombstones],
                [n for _, n in tombstones],
                color="tab:orange",
                label="tombstones (felix view)",
            )
            ax2.set_ylabel("tombstones")
            fig.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.name}.png", dpi=100)
    except ImportError:
        pass
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
