"""Catch-up amplification (issue 12, item 3): a normal client's update latency with and without
a flood of resume-from-seq-1 hellos, in the same run, for the current tree and (optionally) an
older commit, in alternating pairs.

    python -m load.bench_catchup                        # this tree only
    python -m load.bench_catchup --before de1e7e7       # alternate with that commit's server

Each run starts one Typha (``load.bench_typha``: the generator datastore, ``--endpoints``
WorkloadEndpoints, ``--rate`` updates/s) with a 10 s breadcrumb history, so that seq 1 has
left the history once the warm-up is over (a resume from it is then a conflated-catch-up
request, not a replay). ``--clients`` normal clients (``load.worker``, zstd, resume) follow the
updates and sample their write → receipt latency. Then, each for ``--window`` seconds:

1. **baseline**: nothing else;
2. **attack**: ``load.catchup_attack`` opens ``--attack-rate`` connections a second, each a
   hello with ``resume: [epoch, 1, nil]`` (the epoch read from ``/status``), ``catchup`` and
   zstd, reading the answer up to its BatchDone. The window lasts until the last of them is
   answered (or times out after 30 s), so it can be longer than ``--window``;
3. with ``--storm``, **storm**: the same flood of plain hellos without a resume token (each
   gets the shared snapshot): what any connect storm costs, the floor for a refused resume.

Figures per run: the normal clients' latency p50/p99 in each window, Typha's CPU seconds in
each (the attack's cost is the difference), the attacker's counts (how the server answered)
and the 1-minute load average. Typha is pinned to the first CPU, the clients and the attacker
to the others (``--no-pin`` to leave them); the attacker runs at nice 10, so that its own CPU
use on the clients' CPU does not count as Typha's harm. It reads every byte but decodes only
the small frames, as a cheap attacker would. Results: ``.load-results/bench_catchup.json`` and
a plot ``.load-results/bench_catchup.png``; the table is printed (docs/benchmarks.md,
"Catch-up amplification").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import harness
from .harness import MachineCPU, TyphaProc, WorkerPool, latency_summary

SYNCER = 'syncer="felix"'
COUNTERS = (
    "typha_catchups_served_total",
    "typha_catchups_built_total",
    "typha_catchup_kvs_built_total",
    "typha_catchups_refused_total",
    "typha_snapshots_generated_total",
    "typha_snapshots_reused_total",
)


ATTACKER_NICE = 10


def log(msg: str) -> None:
    print(f"[bench_catchup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def extract_tree(ref: str) -> str:
    """The server code of ``ref`` (a commit of this repository), in a temporary directory."""
    root = tempfile.mkdtemp(prefix="bench-catchup-")
    archive = subprocess.run(
        ["git", "-C", harness.ROOT, "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    return root


def counters(typha: TyphaProc) -> dict[str, float]:
    m = typha.metrics()
    return {k: m.get(f"{k}{{{SYNCER}}}", 0.0) for k in COUNTERS}


def window(
    typha: TyphaProc, pool: WorkerPool, secs: float, attack: list[str] | None
) -> dict[str, Any]:
    """One measurement window: ``secs`` of nothing, or of the attack command."""
    typha.gen_stats()  # starts the event-loop lag and slow-step records afresh
    c0, m0, k0 = typha.cpu_s(), MachineCPU.read(), counters(typha)
    t0 = time.time()
    attacker: dict[str, Any] | None = None
    if attack is None:
        time.sleep(secs)
    else:
        # The attacker shares the clients' CPU here (in real life it is elsewhere): it runs
        # in a session of its own at a low priority, so that what the normal clients see is
        # Typha's doing, not the attacker's own CPU use.
        proc = subprocess.Popen(
            attack, stdout=subprocess.PIPE, cwd=harness.ROOT, start_new_session=True
        )
        harness.renice([proc.pid], ATTACKER_NICE)
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the attacker failed (rc={proc.returncode})")
        attacker = json.loads(out.decode().strip().splitlines()[-1])
    t1 = time.time()
    c1, m1, k1 = typha.cpu_s(), MachineCPU.read(), counters(typha)
    loop = typha.gen_stats()
    pool.wait_reports(t1 + 0.2, timeout=5)
    wall = t1 - t0
    typha_cpu = c1 - c0
    return {
        "wall_s": round(wall, 2),
        "latency_ms": latency_summary(pool.latencies(t0, t1)),
        "typha_cpu_s": round(typha_cpu, 2),
        "machine_busy_cores": round(m1.since(m0) / wall, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "counters": {k.removeprefix("typha_"): k1[k] - k0[k] for k in COUNTERS},
        # How late a 5 ms timer fires in Typha (its event loop's lag), and its task steps over
        # 2 ms: the server's side of the latency, apart from the clients' CPU.
        "loop_lag_ms": {k: loop.get(k) for k in ("lag_p50_ms", "lag_p99_ms", "lag_max_ms")},
        "slow_steps": loop.get("slow_steps"),
        "gc_pauses": loop.get("gc"),
        "attacker": attacker,
    }


def one_run(args: argparse.Namespace, label: str, tree: str | None) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server_cpu = cpus[0] if pin else None
    others = ",".join(str(c) for c in cpus[1:]) if pin else ""
    cfg = {"ServerMaxFallBehindSecs": args.history_secs}
    log(f"{label}: Typha with {args.endpoints} endpoints ({tree or 'this tree'})")
    typha = TyphaProc(
        endpoints=args.endpoints, config=cfg, cpu=server_cpu, tree=tree, lag_monitor=True
    )
    pool = WorkerPool(
        [typha.address],
        args.clients,
        processes=1,
        cpu=others,
        sample=args.sample,
        compression=True,
        node_prefix=f"{label}-",
    ).start()
    try:
        if not pool.wait_until(lambda s: s.sums["in_sync"] >= args.clients, 120):
            raise RuntimeError(f"{label}: clients did not get in sync")
        typha.set_rate(args.rate)
        time.sleep(args.history_secs + 3)  # seq 1 leaves the history
        status = typha.status()
        oldest = status["views"]["felix"]["oldest_seq"]
        if oldest <= 2:
            raise RuntimeError(f"{label}: seq 1 is still in the history (oldest {oldest})")
        attack = [
            sys.executable,
            "-m",
            "load.catchup_attack",
            f"--addr={typha.address}",
            f"--epoch={status['epoch']}",
            "--seq=1",
            f"--rate={args.attack_rate}",
            f"--duration={args.window}",
        ]
        if others:
            attack.append(f"--cpu={others}")
        log(f"{label}: baseline {args.window:g}s")
        base = window(typha, pool, args.window, None)
        log(f"{label}: attack {args.attack_rate:g}/s for {args.window:g}s")
        hit = window(typha, pool, args.window, attack)
        storm = None
        if args.storm:
            # The same flood of plain hellos (no resume token): what any connect storm costs,
            # the floor for what a refused resume can cost.
            log(f"{label}: plain-hello storm {args.attack_rate:g}/s for {args.window:g}s")
            cmd = [a if not a.startswith("--seq=") else "--seq=-1" for a in attack]
            storm = window(typha, pool, args.window, cmd)
        out = {
            "label": label,
            "tree": tree or "this tree",
            "pinned": pin,
            "baseline": base,
            "attack": hit,
            "storm": storm,
            # Typha's CPU in the attack window beyond its baseline rate (the attack window lasts
            # until the last hostile connection is answered, so it can be longer).
            "attack_cpu_s": round(
                hit["typha_cpu_s"] - base["typha_cpu_s"] * hit["wall_s"] / base["wall_s"], 2
            ),
        }
        b, a = base["latency_ms"], hit["latency_ms"]
        out["p50_ratio"] = round(a["p50"] / b["p50"], 2) if b["p50"] else None
        out["p99_ratio"] = round(a["p99"] / b["p99"], 2) if b["p99"] else None
        if storm is not None:
            st = storm["latency_ms"]
            out["storm_p50_ratio"] = round(st["p50"] / b["p50"], 2) if b["p50"] else None
            out["storm_p99_ratio"] = round(st["p99"] / b["p99"], 2) if b["p99"] else None
            out["storm_cpu_s"] = round(
                storm["typha_cpu_s"] - base["typha_cpu_s"] * storm["wall_s"] / base["wall_s"], 2
            )
        log(
            f"{label}: p50 {b['p50']} → {a['p50']} ms (x{out['p50_ratio']}), "
            f"p99 {b['p99']} → {a['p99']} ms (x{out['p99_ratio']}); Typha CPU "
            f"{base['typha_cpu_s']} → {hit['typha_cpu_s']} s; loop lag "
            f"{base['loop_lag_ms']} → {hit['loop_lag_ms']}; slow steps {hit['slow_steps']}; "
            f"attacker {hit['attacker']}; "
            f"load {hit['loadavg_1m']}"
        )
        return out
    finally:
        pool.stop()
        typha.stop()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label]

        def med(f, rs=rs):  # type: ignore[no-untyped-def]
            return round(statistics.median(f(r) for r in rs), 2)

        out[label] = {
            "runs": len(rs),
            "baseline_p50_ms": med(lambda r: r["baseline"]["latency_ms"]["p50"]),
            "baseline_p99_ms": med(lambda r: r["baseline"]["latency_ms"]["p99"]),
            "attack_p50_ms": med(lambda r: r["attack"]["latency_ms"]["p50"]),
            "attack_p99_ms": med(lambda r: r["attack"]["latency_ms"]["p99"]),
            "p50_ratio": med(lambda r: r["p50_ratio"]),
            "p99_ratio": med(lambda r: r["p99_ratio"]),
            "attack_cpu_s": med(lambda r: r["attack_cpu_s"]),
            "attack_connections": med(lambda r: r["attack"]["attacker"]["completed"]),
            "loadavg_1m": [r["attack"]["loadavg_1m"] for r in rs],
        }
        if all(r.get("storm") for r in rs):
            out[label]["storm_p50_ratio"] = med(lambda r: r["storm_p50_ratio"])
            out[label]["storm_p99_ratio"] = med(lambda r: r["storm_p99_ratio"])
            out[label]["storm_cpu_s"] = med(lambda r: r["storm_cpu_s"])
        ok = out[label]["p50_ratio"] <= 1.2 and out[label]["p99_ratio"] <= 1.2
        out[label]["within_1.2x"] = ok
    return out


def storm_cell(r: dict[str, Any]) -> str:
    if not r.get("storm"):
        return "-"
    return f"{r['storm_p50_ratio']} / {r['storm_p99_ratio']}, {r['storm_cpu_s']}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| server | run | load avg | baseline p50 / p99 (ms) | under attack p50 / p99 (ms) | "
        "ratio p50 / p99 | attack: connections answered (catch-ups / snapshots) | "
        "attack's Typha CPU-s | plain-hello storm: ratio p50 / p99, Typha CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results["runs"]):
        b, a = r["baseline"]["latency_ms"], r["attack"]["latency_ms"]
        att = r["attack"]["attacker"]
        lines.append(
            f"| {r['label']} | {i + 1} | {r['attack']['loadavg_1m']} | {b['p50']} / {b['p99']} | "
            f"{a['p50']} / {a['p99']} | {r['p50_ratio']} / {r['p99_ratio']} | "
            f"{att['completed']} of {att['opened']} ({att['catchups']} / {att['snapshots']}) | "
            f"{r['attack_cpu_s']} | {storm_cell(r)} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = list(results["summary"])
    for j, q in enumerate(("p50", "p99")):
        for i, label in enumerate(labels):
            rs = [r for r in results["runs"] if r["label"] == label]
            x = i * 3 + j
            base = [r["baseline"]["latency_ms"][q] for r in rs]
            hit = [r["attack"]["latency_ms"][q] for r in rs]
            storm = [r["storm"]["latency_ms"][q] for r in rs if r.get("storm")]
            ax.scatter([x - 0.2] * len(base), base, color="tab:green", marker="o")
            ax.scatter([x] * len(hit), hit, color="tab:red", marker="x")
            ax.scatter([x + 0.2] * len(storm), storm, color="tab:blue", marker="^")
    ax.set_xticks(
        [i * 3 + j for i in range(len(labels)) for j in range(2)],
        [f"{label}\n{q}" for label in labels for q in ("p50", "p99")],
    )
    ax.set_yscale("log")
    ax.set_ylabel("normal client's write → receipt latency (ms)")
    ax.scatter([], [], color="tab:green", marker="o", label="baseline")
    ax.scatter([], [], color="tab:red", marker="x", label="resume-from-1 flood")
    ax.scatter([], [], color="tab:blue", marker="^", label="plain-hello flood")
    ax.legend()
    ax.set_title("resume-from-seq-1 flood: normal client latency")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="", help="a commit to compare with (alternating runs)")
    p.add_argument("--pairs", type=int, default=2, help="runs of each server")
    p.add_argument("--endpoints", type=int, default=20000)
    p.add_argument("--rate", type=float, default=200.0, help="datastore updates/s")
    p.add_argument("--clients", type=int, default=20, help="normal clients")
    p.add_argument("--sample", type=float, default=0.05, help="P(latency sample) per KV")
    p.add_argument("--attack-rate", type=float, default=30.0, help="hostile hellos per second")
    p.add_argument("--window", type=float, default=20.0, help="seconds per window")
    p.add_argument("--history-secs", type=float, default=10.0, help="ServerMaxFallBehindSecs")
    p.add_argument(
        "--storm",
        action="store_true",
        help="a third window: the same flood of plain hellos (no resume token), to compare",
    )
    p.add_argument("--no-pin", action="store_true")
    p.add_argument(
        "--nice",
        type=int,
        default=None,
        help="priority of Typha and the clients (e.g. -10 on a shared machine; needs root)",
    )
    p.add_argument("--json", default=".load-results/bench_catchup.json")
    p.add_argument("--plot", default=".load-results/bench_catchup.png")
    args = p.parse_args(argv)
    harness.NICE = args.nice
    servers: list[tuple[str, str | None]] = [("after", None)]
    tree = None
    if args.before:
        tree = extract_tree(args.before)
        servers = [("before", tree), ("after", None)]
    runs = []
    try:
        for _ in range(args.pairs):
            for label, t in servers:
                runs.append(one_run(args, label, t))
    finally:
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
    results = {
        "command": "python -m load.bench_catchup " + " ".join(argv or sys.argv[1:]),
        "before": args.before or None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
        "runs": runs,
    }
    results["summary"] = summarize(runs)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(results, args.plot)
    print(table(results))
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
