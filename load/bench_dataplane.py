"""Node client figures for docs/benchmarks.md (`python -m load.bench_dataplane`).

1. **Snapshot → dataplane**, per cluster size (default 20,000 and 150,000 workload endpoints,
   ~100 of them on the local node, 500 policies, from ``felix_client.calc.synthetic``): a real
   typha-py (in this process, on an in-memory datastore holding the cluster's model KVs) serves
   the snapshot over TCP to a ``felix_client`` node agent in a *child process*, so the child's
   peak RSS is the node client's alone. Each run is one fresh child per mode:

   - ``dryrun``: the agent's dry-run dataplane renders the ipset-restore / iptables-restore /
     routes input and writes it to files ("written");
   - ``netns``: the agent's kernel dataplane applies it with real ``ipset restore``,
     ``iptables-restore`` and netlink routes in a network namespace made here for the run, with
     a veth for each local endpoint ("applied").

   Phases (child clocks): connect → first KVs; first KVs → snapshot received (in-sync; includes
   decoding and indexing every KV as it arrives); received → computed (the agent's flush: rule
   and ipset calculation, plus its 10 ms debounce); computed → written / applied. The kernel
   apply is split into ipset restore, iptables-save / -restore, checks (``ipset list``,
   ``iptables -C``), netlink routes, and the rest (rendering the restore input). Peak RSS is
   the child's VmHWM (the restore commands it runs are separate processes, not counted). Each
   phase also has its CPU time (``*_cpu_ms``: the child's, plus the commands it ran), which the
   other users of a shared machine do not stretch as they stretch wall time.

   ``--runs`` runs per size (default 3), load average recorded before each; the summary gives
   median and min-max, and a scaling check: per-endpoint normalised median, largest size over
   smallest (≤ 1.15 means no worse than linear).
2. ``--label-changes``: on a node with local veths in a namespace, the kernel apply time of one
   label change: a local one (rewrites the endpoint's chains) and a remote one (moves ipset
   members) — ``felix_int_dataplane_apply_time_seconds``. In-process, after the runs.

Writes .load-results/bench_dataplane.json and prints a markdown table. Needs root for the
namespace parts (skipped otherwise, and said so in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from felix_client.agent import NodeAgent
from felix_client.calc.synthetic import build_cluster
from felix_client.dataplane.dryrun import FILES
from felix_client.sync_client import SyncClient
from load.harness import write_result
from typha.app import Typha
from typha.config import load_config
from typha.protocol import SyncStatus
from typha.sync.memory import MemoryDatastore

LOCAL = "node-0"
MODES = ("dryrun", "netns")
# The labels a local endpoint toggles between: every synthetic cluster has gnp-0 selecting
# app0, and no GlobalNetworkPolicy selects app1, so each toggle adds or removes a tier in the
# endpoint's chains (a change that must be written to iptables).
GNP_APP, NO_GNP_APP = "app0", "app1"


def cluster(n_endpoints: int, n_policies: int, local: int = 100) -> list[tuple[str, Any]]:
    """``n_endpoints`` pods evenly on ``n_endpoints // local`` nodes, so ``local`` on node-0."""
    return build_cluster(
        n_endpoints=n_endpoints,
        n_policies=n_policies,
        n_nodes=max(1, n_endpoints // local),
        local_node=LOCAL,
    )


def local_endpoints(kvs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in kvs if k.startswith(f"/calico/v1/host/{LOCAL}/workload/")]


def summary(values: list[float]) -> dict[str, Any]:
    """Median, p90 and max in ms; ``{"n": 0}`` when nothing was measured."""
    if not values:
        return {"n": 0}
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.9))], 2),
        "max_ms": round(ms[-1], 2),
    }


def vm_kib(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def node_namespace(pool: Any, local: list[tuple[str, Any]]) -> str:
    """A node namespace with an uplink and one veth per local endpoint (the host side named
    as the endpoint's interface, as the CNI plugin would)."""
    from tests.dataplane.nstools import nsrun, veth

    node = pool.create("node0")
    peer = pool.create("peer")
    veth(node, "eth0", peer, "uplink")
    nsrun(node, "ip", "addr", "add", "192.168.0.10/24", "dev", "eth0")
    lines = []
    for i, (_, v) in enumerate(local):
        lines += [
            f"link add {v['name']} type veth peer name wl{i}",
            f"link set {v['name']} up",
            f"link set wl{i} up",
        ]
    if lines:
        nsrun(node, "ip", "-batch", "-", input="\n".join(lines) + "\n")
    return node


# --- the child: one node agent, one snapshot, one dataplane ---------------------------------------


def cpu_seconds() -> float:
    """CPU of this process and of the commands it ran and reaped (ipset, iptables-restore)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def time_calls(obj: Any, name: str, totals: dict[str, float], kind: str) -> None:
    """Wrap ``obj.name`` (an async method) so its wall time adds up in ``totals[kind]``."""
    inner: Callable[..., Awaitable[Any]] = getattr(obj, name)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(*args, **kwargs)
        finally:
            totals[kind] = totals.get(kind, 0.0) + time.perf_counter() - started

    setattr(obj, name, timed)


async def child_run(mode: str, port: int, netns: str | None) -> dict[str, Any]:
    baseline_kib = vm_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        agent = NodeAgent(
            LOCAL,
            dry_run_dir=out_dir if mode == "dryrun" else None,
            netns=netns if mode == "netns" else None,
            metrics_port=0,
            resync_interval=None,
        )
        marks: dict[str, float] = {}
        cpu: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = time.perf_counter()
            cpu[name] = cpu_seconds()

        hwm: dict[str, int] = {}
        commands: dict[str, float] = {}
        dataplane = agent.dataplane
        inner_resync = dataplane.resync

        async def resync(state: Any, host: Any) -> None:
            mark("computed")
            hwm["computed"] = vm_kib("VmHWM")
            await inner_resync(state, host)
            mark("done")

        dataplane.resync = resync  # type: ignore[method-assign]
        if mode == "netns":
            for name, kind in (
                ("_ipset_restore", "ipset_restore"),
                ("_iptables_restore", "iptables_restore"),
                ("_iptables_save", "iptables_save"),
                ("_run_checked", "checks"),
                ("_netlink", "routes_netlink"),
            ):
                time_calls(dataplane, name, commands, kind)
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            client = SyncClient([f"127.0.0.1:{port}"], LOCAL, callbacks=agent)

            def first_kvs(_msg: Any) -> None:
                if "first_kvs" not in marks:
                    mark("first_kvs")

            client.on_kvs = first_kvs
            mark("connect")
            nursery.start_soon(client.run)
            await client.in_sync.wait()
            mark("received")
            hwm["received"] = vm_kib("VmHWM")
            await agent.wait_applied(timeout=900)
            nursery.cancel_scope.cancel()
        if agent.failures:
            raise RuntimeError(f"dataplane apply failed: {agent.last_error}")

        def ms(a: str, b: str) -> float:
            return round((marks[b] - marks[a]) * 1000, 1)

        def cpu_ms(a: str, b: str) -> float:
            return round((cpu[b] - cpu[a]) * 1000, 1)

        done = "written" if mode == "dryrun" else "applied"
        out: dict[str, Any] = {
            "connect_to_first_kvs_ms": ms("connect", "first_kvs"),
            "first_kvs_to_received_ms": ms("first_kvs", "received"),
            "received_to_computed_ms": ms("received", "computed"),
            "calc_ms": round(agent.last_calc_seconds * 1000, 1),
            f"computed_to_{done}_ms": ms("computed", "done"),
            f"received_to_{done}_ms": ms("received", "done"),
            "first_kvs_to_received_cpu_ms": cpu_ms("first_kvs", "received"),
            "received_to_computed_cpu_ms": cpu_ms("received", "computed"),
            f"computed_to_{done}_cpu_ms": cpu_ms("computed", "done"),
            f"received_to_{done}_cpu_ms": cpu_ms("received", "done"),
            "baseline_rss_mib": round(baseline_kib / 1024, 1),
            "hwm_at_received_mib": round(hwm["received"] / 1024, 1),
            "hwm_at_computed_mib": round(hwm["computed"] / 1024, 1),
            "peak_rss_mib": round(vm_kib("VmHWM") / 1024, 1),
            "local_endpoint_chains": sum(
                1
                for c in (agent.state.filter_chains if agent.state else {})
                if c.startswith("cali-tw-")
            ),
        }
        if mode == "dryrun":
            out["file_bytes"] = {name: (out_dir / name).stat().st_size for name in FILES}
        else:
            total = marks["done"] - marks["computed"]
            for kind, secs in sorted(commands.items()):
                out[f"apply_{kind}_ms"] = round(secs * 1000, 1)
            out["apply_render_and_other_ms"] = round((total - sum(commands.values())) * 1000, 1)
            if agent.state is not None:
                out["ipsets"] = len(agent.state.ipsets)
                out["ipset_members"] = sum(len(s.members) for s in agent.state.ipsets.values())
                out["filter_rules"] = sum(len(c) for c in agent.state.filter_chains.values())
                out["routes"] = len(agent.state.routes)
        return out


# --- the parent: the cluster, the Typha, the runs ----------------------------------------------


async def one_run(
    mode: str, port: int, local: list[tuple[str, Any]], profile: str | None = None
) -> dict[str, Any]:
    load = os.getloadavg()
    pool = None
    args = [sys.executable, "-m", "load.bench_dataplane", "--child", mode, "--port", str(port)]
    if profile:
        args += ["--profile", profile]
    if mode == "netns":
        from tests.dataplane.nstools import NetnsPool, can_use_netns

        why = can_use_netns()
        if why:
            return {"mode": mode, "skipped": why}
        pool = NetnsPool()
    try:
        if pool is not None:
            args += ["--netns", node_namespace(pool, local)]
        # A session of its own: with autogroup scheduling the child then gets a fair share of
        # the shared machine instead of splitting one with this process.
        proc = await trio.run_process(
            args, capture_stdout=True, stderr=None, check=False, start_new_session=True
        )
    finally:
        if pool is not None:
            pool.cleanup()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child exited {proc.returncode}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {"mode": mode, "loadavg_1_5_15": [round(x, 2) for x in load], **result}


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per mode, per numeric figure: median and min-max over the runs."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode and "skipped" not in r]
        if not mine:
            continue
        keys = [k for k, v in mine[0].items() if isinstance(v, int | float)]
        out[mode] = {k: spread([float(r[k]) for r in mine]) for k in keys}
    return out


def scaling(sizes: dict[str, Any]) -> dict[str, Any]:
    """Per-endpoint normalised median of each figure, largest size over smallest: 1.0 is
    linear, ≤ 1.15 passes. RSS is taken above the interpreter's baseline."""
    if len(sizes) < 2:
        return {}
    small, large = sorted(sizes, key=int)[0], sorted(sizes, key=int)[-1]
    factor = int(large) / int(small)
    out: dict[str, Any] = {"from": int(small), "to": int(large)}
    for mode, figures in sizes[large]["summary"].items():
        base = sizes[small]["summary"].get(mode, {})
        ratios = {}
        for key, spread_large in figures.items():
            if key not in base or not (key.endswith("_ms") or key.endswith("_mib")):
                continue
            if key == "baseline_rss_mib" or key.startswith("connect_to"):
                continue
            a, b = base[key]["median"], spread_large["median"]
            if key.endswith("_mib"):
                a -= base["baseline_rss_mib"]["median"]
                b -= figures["baseline_rss_mib"]["median"]
            if a > 0:
                ratios[key] = round(b / (a * factor), 2)
        out[mode] = ratios
    return out


def table(result: dict[str, Any]) -> str:
    """The docs/benchmarks.md table: median (min-max) per size."""
    sizes = result["sizes"]
    cols = sorted(sizes, key=int)
    rows = [
        ("dryrun", "first_kvs_to_received_ms", "first KVs → snapshot received (decode + index)"),
        ("dryrun", "received_to_computed_ms", "received → computed (flush: rules + ipsets)"),
        ("dryrun", "computed_to_written_ms", "computed → written (dry-run restore input files)"),
        ("dryrun", "received_to_written_ms", "**received → written**"),
        ("dryrun", "first_kvs_to_received_cpu_ms", "  CPU: first KVs → received"),
        ("dryrun", "received_to_computed_cpu_ms", "  CPU: received → computed"),
        ("dryrun", "computed_to_written_cpu_ms", "  CPU: computed → written"),
        ("dryrun", "peak_rss_mib", "peak RSS, dry-run (MiB)"),
        ("netns", "computed_to_applied_ms", "computed → applied in a namespace"),
        ("netns", "apply_ipset_restore_ms", "  of which ipset restore"),
        ("netns", "apply_iptables_restore_ms", "  of which iptables-restore"),
        ("netns", "apply_iptables_save_ms", "  of which iptables-save"),
        ("netns", "apply_checks_ms", "  of which checks (ipset list, iptables -C)"),
        ("netns", "apply_routes_netlink_ms", "  of which routes (netlink)"),
        ("netns", "apply_render_and_other_ms", "  of which rendering and the rest"),
        ("netns", "computed_to_applied_cpu_ms", "  CPU: computed → applied (with the commands)"),
        ("netns", "received_to_applied_ms", "**received → applied**"),
        ("netns", "peak_rss_mib", "peak RSS, kernel dataplane (MiB)"),
    ]
    head = "| figure | " + " | ".join(f"{int(c):,} endpoints" for c in cols) + " | scaling |"
    lines = [head, "|---" * (len(cols) + 2) + "|"]
    scale = result.get("scaling", {})
    for mode, key, label in rows:
        cells = []
        for c in cols:
            s = sizes[c]["summary"].get(mode, {}).get(key)
            cells.append(f"{s['median']:,} ({s['min']:,}-{s['max']:,})" if s else "-")
        ratio = scale.get(mode, {}).get(key)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio if ratio else '-'} |")
    return "\n".join(lines)


def remote_toggles(
    kvs: list[tuple[str, Any]],
    local: list[tuple[str, Any]],
    remote: list[tuple[str, Any]],
    count: int,
) -> list[tuple[str, Any]]:
    """Up to ``count`` remote endpoint relabels (distinct endpoints) that each move the endpoint
    into or out of a rule selector of a policy active on this node, so each must change an
    ipset member (a random relabel mostly touches nothing the node programs)."""
    from felix_client.calc.selector import parse

    local_labels = [v["labels"] for _, v in local]
    rule_selectors = []
    for key, value in kvs:
        if not key.startswith("/calico/v1/policy/") or "selector" not in (value or {}):
            continue
        selected = parse(value["selector"])
        if not any(selected.matches(labels) for labels in local_labels):
            continue
        for rule in value.get("inbound_rules", []) + value.get("outbound_rules", []):
            for field in ("src_selector", "dst_selector"):
                if rule.get(field):
                    rule_selectors.append(parse(rule[field]))
    toggles: list[tuple[str, Any]] = []
    used: set[str] = set()
    while rule_selectors and len(toggles) < count:
        found = False
        for sel in rule_selectors:
            # The first couple of thousand cover every namespace; a selector matching no
            # endpoint at all (network sets only) must not cost a scan of the whole cluster.
            for key, value in remote[:2000]:
                if key in used:
                    continue
                labels = value["labels"]
                for app in (f"app{a}" for a in range(40)):
                    moved = {**labels, "app": app}
                    if sel.matches(moved) != sel.matches(labels):
                        toggles.append((key, {**value, "labels": moved}))
                        used.add(key)
                        found = True
                        break
                else:
                    continue
                break
            if len(toggles) >= count:
                break
        if not found:
            break
    return toggles


async def label_changes_in_netns(kvs: list[tuple[str, Any]], count: int = 30) -> dict[str, Any]:
    from tests.dataplane.nstools import NetnsPool, can_use_netns

    why = can_use_netns()
    if why:
        return {"skipped": why}
    local = local_endpoints(kvs)
    mine = f"/calico/v1/host/{LOCAL}/"
    remote = [(k, v) for k, v in kvs if "/workload/" in k and not k.startswith(mine)]
    pool = NetnsPool()
    try:
        node = node_namespace(pool, local)
        agent = NodeAgent(LOCAL, netns=node, metrics_port=0)
        chain_applies: list[float] = []
        set_applies: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            agent.on_updates(kvs)
            agent.on_status(SyncStatus.IN_SYNC)
            t0 = time.perf_counter()
            await agent.wait_applied(timeout=300)
            initial = time.perf_counter() - t0
            stats = agent.dataplane.stats
            for i in range(count if local else 0):
                key, value = local[i % len(local)]
                app = NO_GNP_APP if value["labels"]["app"] == GNP_APP else GNP_APP
                value = {**value, "labels": {**value["labels"], "app": app}}
                local[i % len(local)] = (key, value)
                before = stats.iptables_restore_calls
                agent.on_updates([(key, value)])
                await agent.wait_applied()
                if stats.iptables_restore_calls > before:
                    chain_applies.append(agent.last_apply_seconds)
            for key, value in remote_toggles(kvs, local, remote, count):
                before = stats.ipset_calls
                agent.on_updates([(key, value)])
                await agent.wait_applied()
                if stats.ipset_calls > before:
                    set_applies.append(agent.last_apply_seconds)
            nursery.cancel_scope.cancel()
        return {
            "local_endpoints": len(local),
            "initial_resync_ms": round(initial * 1000, 1),
            "local_label_change_apply": summary(chain_applies),
            "remote_label_change_apply": summary(set_applies),
        }
    finally:
        pool.cleanup()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": {
            "sizes": args.sizes,
            "policies": args.policies,
            "local": args.local,
            "runs": args.runs,
            "feed": "in-process typha-py on an in-memory datastore → TCP → node agent child",
            "cpus": os.cpu_count(),
        },
        "sizes": {},
    }
    for n in args.sizes:
        kvs = cluster(n, args.policies, args.local)
        local = local_endpoints(kvs)
        cfg = load_config(
            environ={},
            overrides={"ServerPort": -1, "ServerHost": "127.0.0.1", "LogFilePath": "none"},
        )
        typha = Typha(cfg, MemoryDatastore(dict(kvs)))
        runs: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            port = await nursery.start(typha.run)
            for r in range(args.runs):
                for mode in MODES:
                    profile = None
                    if args.profile:
                        Path(args.profile).mkdir(parents=True, exist_ok=True)
                        profile = str(Path(args.profile) / f"{n}-{mode}-{r}.prof")
                    run = await one_run(mode, port, local, profile)
                    print(f"{n} run {r} {json.dumps(run)}", file=sys.stderr, flush=True)
                    runs.append(run)
            nursery.cancel_scope.cancel()
        entry: dict[str, Any] = {
            "endpoints": n,
            "local_endpoints": len(local),
            "kvs": len(kvs),
            "runs": runs,
            "summary": summarize(runs),
        }
        if args.label_changes:
            entry["kernel_label_change"] = await label_changes_in_netns(kvs)
        result["sizes"][str(n)] = entry
        del kvs, typha
    result["scaling"] = scaling(result["sizes"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 150_000])
    parser.add_argument("--endpoints", type=int, help="one size (same as --sizes N)")
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--local", type=int, default=100, help="endpoints on the local node")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label-changes", action="store_true")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile each node agent child into DIR/<size>-<mode>-<run>.prof",
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.endpoints:
        args.sizes = [args.endpoints]
    from typha import logs

    logs.configure_logging(screen="WARNING")
    if args.child:
        if args.profile:
            import cProfile

            with cProfile.Profile() as prof:
                out = trio.run(child_run, args.child, args.port, args.netns)
            prof.dump_stats(args.profile)
        else:
            out = trio.run(child_run, args.child, args.port, args.netns)
        print(json.dumps(out), flush=True)
        return 0
    result = trio.run(bench, args)
    write_result("bench_dataplane", result)
    print(table(result))
    logs.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
