"""Real Felix start -> node programmed, from typha-py and from Calico Typha, on a big cluster
(`python -m load.felix_start`; figures for docs/benchmarks.md).

The cluster: config/examples (nodes, pool, blocks, profiles, policies) plus `--endpoints`
WorkloadEndpoints in all, `--local` of them on node1 (Felix's node, each with its veth so Felix
programs its /32 route) and the rest spread over 200 other nodes, and `--policies` global
policies, each selecting one app and allowing TCP 8080 from two others (so every policy has a
selector ipset with about endpoints/97 members per app).  Each run gets a fresh etcd with the
same content (Felix writes its status back, Calico Typha its start-up objects), the Typha is
started and in sync first, then Felix is exec'd on a fresh node namespace.  Runs alternate
between the two Typhas.

Measured per run: Felix exec -> its readiness endpoint 200 (in sync and dataplane programmed),
Felix's own "Completed first update to dataplane" (`secsSinceStart`), when its "Datastore now
in sync." line came on the same clock (the Typha's share: connect, snapshot, in-sync), the check
that the dataplane then holds every local endpoint's chains and route and the policies' ipsets with
their members; Felix's peak RSS (VmHWM).  Needs root (network namespaces) and the peers
(`scripts/build-peers.sh calico`).  Writes .load-results/felix_start.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(".load-results")
LOCAL_NODE = "node1"
APPS = 97


def workloads(endpoints: int, local: int) -> list[dict[str, Any]]:
    from typha.resources import workload_endpoint_for_pod

    out = []
    for i in range(endpoints):
        is_local = i < local
        node = LOCAL_NODE if is_local else f"node-{i % 200:03d}"
        ip = (
            f"10.200.{i >> 8}.{i & 255}"
            if is_local
            else f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        )
        out.append(
            workload_endpoint_for_pod(
                node, f"ns-{i % 50}", f"pod-{i}", ip, {"app": f"app-{i % APPS}"}
            )
        )
    return out


def policies(n: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": f"bench-{j}"},
            "spec": {
                "order": 500 + j,
                "selector": f"app == 'app-{j % APPS}'",
                "types": ["Ingress"],
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {
                            "selector": f"app in {{'app-{(j + 1) % APPS}', 'app-{(j + 2) % APPS}'}}"
                        },
                        "destination": {"ports": [8080]},
                    }
                ],
            },
        }
        for j in range(n)
    ]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int | None) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")


CONNECTED = "Successfully connected to Typha at"
IN_SYNC = "Datastore now in sync."
FIRST_UPDATE = "Completed first update to dataplane."


def log_stamps(log: str) -> dict[str, dt.datetime]:
    """The time of the first line holding each marker of Felix's start-up."""
    stamps = {}
    for line in log.splitlines():
        m = _LOG_TIME.match(line)
        for marker in (CONNECTED, IN_SYNC, FIRST_UPDATE):
            if m and marker in line and marker not in stamps:
                stamps[marker] = dt.datetime.fromisoformat(m.group(1))
    return stamps


def in_sync_secs(log: str, first_update_secs: float | None) -> float | None:
    """Felix's "Datastore now in sync." as seconds since its start: the first update's own
    secsSinceStart minus the gap between the two lines' timestamps."""
    stamps = log_stamps(log)
    if first_update_secs is None or IN_SYNC not in stamps or FIRST_UPDATE not in stamps:
        return None
    return round(first_update_secs - (stamps[FIRST_UPDATE] - stamps[IN_SYNC]).total_seconds(), 3)


def connected_to_in_sync_secs(log: str) -> float | None:
    """From Felix's connection to its Typha to its datastore in sync: the snapshot's delivery
    (and Felix's reading of it), the part a Typha can change."""
    stamps = log_stamps(log)
    if CONNECTED not in stamps or IN_SYNC not in stamps:
        return None
    return round((stamps[IN_SYNC] - stamps[CONNECTED]).total_seconds(), 3)


def check_programmed(snap: Any, local_ifaces: list[str], policy_count: int) -> dict[str, int]:
    chains = snap.chains()
    missing = [i for i in local_ifaces if f"cali-tw-{i}" not in chains]
    routed = {r.split()[2] for r in snap.routes if " dev cali" in r}
    unrouted = [i for i in local_ifaces if i not in routed]
    selector_sets = [m for n, (_, m) in snap.ipsets.items() if n.startswith("cali40s:")]
    members = sum(len(m) for m in selector_sets)
    if missing or unrouted or not members:
        raise AssertionError(
            f"dataplane incomplete: {len(missing)} chains and {len(unrouted)} routes missing, "
            f"{members} selector-set members"
        )
    policy_chains = sum(1 for c in chains if c.startswith("cali-pi-"))
    return {
        "local_chains": len(local_ifaces) - len(missing),
        "local_routes": len(local_ifaces) - len(unrouted),
        "selector_sets": len(selector_sets),
        "selector_set_members": members,
        "policy_chains": policy_chains,
        "filter_rules": sum(len(r) for r in snap.iptables.get("filter", {}).values()),
    }


def one_run(lab: Any, kind: str, resources: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    from tests.peers.process import PeerError, PeerProcess

    t0 = time.monotonic()
    local_ifaces = lab.add_workload_interfaces(resources)
    etcd = lab.etcd()
    lab.load(etcd, resources)
    t_loaded = time.monotonic()
    typha = lab.calico_typha(etcd) if kind == "calico" else lab.typha_py(etcd)
    typha_cpu = cpu_seconds(typha.pid)
    felix = lab.felix(etcd, typha, startup_timeout=300.0)
    ready = felix.startup_seconds
    # Felix logs through a queue written out by another goroutine, dropping lines when it is
    # full ("... dropped N logs ..."): the line can trail readiness, or be lost at this size.
    with contextlib.suppress(PeerError):  # recorded as None, and the log kept
        felix.wait_until(lambda: felix.first_update_seconds() is not None, 5, "first-update line")
    first_update = felix.first_update_seconds()
    typha_cpu = cpu_seconds(typha.pid) - typha_cpu
    rss = vm_hwm_mb(felix.pid)
    log = felix.log_path.read_text(errors="replace")
    in_sync = in_sync_secs(log, first_update)
    snap = lab.snapshot()
    programmed = check_programmed(snap, local_ifaces, args.policies)
    run = {
        "typha": kind,
        "felix_exec_to_ready_s": round(ready or 0.0, 3),
        "felix_in_sync_secs_since_start": in_sync,
        "felix_connected_to_in_sync_s": connected_to_in_sync_secs(log),
        "felix_first_update_secs_since_start": first_update,
        "felix_vmhwm_mb": rss,
        "typha_start_to_ready_s": round(typha.startup_seconds or 0.0, 3),
        "typha_cpu_s_during_felix_start": round(typha_cpu, 2),
        "etcd_load_s": round(t_loaded - t0, 1),
        **programmed,
    }
    print(json.dumps(run), file=sys.stderr, flush=True)
    # Felix's log, kept for a look at any odd run.
    logs = RESULTS / "felix_start_logs"
    logs.mkdir(parents=True, exist_ok=True)
    run["felix_log"] = str(logs / f"run-{len(list(logs.iterdir()))}-{kind}.log")
    Path(run["felix_log"]).write_bytes(felix.log_path.read_bytes())
    peers: list[PeerProcess] = list(lab._peers)
    for peer in peers:
        lab.stop(peer)
    lab.fresh_node_without_felix()
    return run


def summarize(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [r for r in runs if r["typha"] == kind]
    out: dict[str, Any] = {"typha": kind, "runs": len(mine)}
    fields = (
        "felix_exec_to_ready_s",
        "felix_in_sync_secs_since_start",
        "felix_connected_to_in_sync_s",
        "felix_first_update_secs_since_start",
        "felix_vmhwm_mb",
        "typha_cpu_s_during_felix_start",
    )
    for field in fields:
        values = [r[field] for r in mine if r[field] is not None]
        if values:
            out[field] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=20_000)
    parser.add_argument("--local", type=int, default=100)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="runs per Typha")
    args = parser.parse_args(argv)

    from tests.calico.datasets import examples
    from tests.dataplane.nstools import can_use_netns
    from tests.felix.lab import FelixLab
    from tests.felix.netns import reap_leftovers
    from tests.peers.calico_typha import find_calico_typha
    from tests.peers.felix import find_felix

    why = can_use_netns()
    felix_bin, typha_bin = find_felix(), find_calico_typha()
    if why or not felix_bin or not typha_bin:
        sys.exit(f"cannot run: {why or 'calico-felix/calico-typha not built'}")
    resources = [
        *examples(),
        *workloads(args.endpoints, args.local),
        *policies(args.policies),
    ]
    reap_leftovers()
    lab = FelixLab(felix_binary=felix_bin, typha_binary=typha_bin)
    runs = []
    try:
        lab.setup()
        for i in range(args.runs * 2):
            kind = (
                ("calico", "typha-py")[i % 2]
                if (i // 2) % 2 == 0
                else ("typha-py", "calico")[i % 2]
            )
            runs.append(one_run(lab, kind, resources, args))
    finally:
        lab.close()
    result = {
        "what": "calico-felix exec -> readiness / first dataplane update, per Typha",
        "endpoints": args.endpoints,
        "local_endpoints": args.local,
        "policies": args.policies,
        "host": platform.node(),
        "summary": [summarize(runs, k) for k in ("calico", "typha-py")],
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "felix_start.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
