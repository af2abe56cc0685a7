"""Parent-side plumbing shared by the benchmark and the load tool: child processes (Typha,
the plain sender, worker pools), Prometheus text, CPU and memory readings, percentiles."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from typha.logs import configure_logging

from .worker import WorkerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- Numbers ------------------------------------------------------------------------------------


def percentile(sorted_xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q / 100.0 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def latency_summary(xs: Iterable[float]) -> dict[str, Any]:
    s = sorted(xs)
    out: dict[str, Any] = {"samples": len(s)}
    for q in (50, 90, 99, 99.9):
        v = percentile(s, q)
        out[f"p{q:g}"] = None if v is None else round(v, 2)
    out["max"] = round(s[-1], 2) if s else None
    out["min"] = round(s[0], 2) if s else None
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    return slope, my - slope * mx


# --- Processes ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc via psutil)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def renice(pids: Iterable[int], nice: int | None) -> None:
    """Set the scheduling priority of our own child processes (None: leave it).

    With autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) the CPU is first
    shared between sessions and a process's nice only matters inside its session, so the
    children run in sessions of their own and the autogroup's nice is set too.
    """
    if nice is None:
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))


# Priority for the processes the benchmark starts; set by the driver (None: inherit).
NICE: int | None = None


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@dataclass
class MachineCPU:
    """Whole-machine busy CPU seconds from /proc/stat, to show what else ran meanwhile."""

    busy: float = 0.0
    total: float = 0.0

    @classmethod
    def read(cls) -> MachineCPU:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
        # guest time is already counted in user/nice
        total = sum(parts[:8])
        return cls((total - idle) / hz, total / hz)

    def since(self, before: MachineCPU) -> float:
        return self.busy - before.busy


def fetch_text(host: str, port: int, path: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
        return resp.read().decode()


def parse_prometheus(text: str) -> dict[str, float]:
    """Sample name with its labels (as written) → value, e.g.
    ``typha_snapshots_generated_total{syncer="felix"}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


class _JsonLineChild:
    """A child process that prints JSON lines on stdout and reads commands on stdin."""

    def __init__(
        self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: str = ROOT
    ) -> None:
        # A session of its own: its own autogroup, so that the scheduler weighs it like any
        # other session on a shared machine (and ``renice`` can raise it).
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd[2]} exited before it was ready (rc={self.proc.wait()})")
        self.ready: dict[str, Any] = json.loads(line)
        self.pid: int = self.ready["pid"]
        renice([self.pid], NICE)

    def cmd(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.cmd({"cmd": "quit"})
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class TyphaProc(_JsonLineChild):
    """``load.bench_typha`` in its own process."""

    def __init__(
        self,
        *,
        endpoints: int,
        rate: float = 0.0,
        config: dict[str, Any] | None = None,
        batch_ms: float = 5.0,
        cpu: int | None = None,
        lag_monitor: bool = False,
        profile: bool = False,
        tree: str | None = None,
    ) -> None:
        """``tree``: run Typha from another source tree (e.g. an older commit, extracted), to
        compare it with this one in the same run."""
        cmd = [
            sys.executable,
            "-m",
            "load.bench_typha",
            "--endpoints",
            str(endpoints),
            "--rate",
            str(rate),
            "--batch-ms",
            str(batch_ms),
            "--config",
            json.dumps(config or {}),
        ]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if lag_monitor:
            cmd.append("--lag-monitor")
        env = dict(os.environ)
        if profile:
            env["TYPHA_BENCH_PROFILE"] = "1"
        if tree is not None:
            env["PYTHONPATH"] = tree
        super().__init__(cmd, env=env, cwd=tree or ROOT)
        self.port: int = self.ready["port"]
        self.http_port: int = self.ready["http_port"]
        self.config = config or {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        return parse_prometheus(fetch_text("127.0.0.1", self.http_port, "/metrics"))

    def status(self) -> dict[str, Any]:
        return json.loads(fetch_text("127.0.0.1", self.http_port, "/status"))

    def set_rate(self, rate: float) -> None:
        self.cmd({"cmd": "rate", "rate": rate})

    def gen_stats(self) -> dict[str, Any]:
        return self.cmd({"cmd": "stats"})


class PlainSenderProc(_JsonLineChild):
    """``load.plain_sender`` in its own process."""

    def __init__(self, *, endpoints: int, cpu: int | None = None) -> None:
        cmd = [sys.executable, "-m", "load.plain_sender", "--endpoints", str(endpoints)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        super().__init__(cmd)
        self.port: int = self.ready["port"]
        self.bytes: int = self.ready["bytes"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class PoolSnapshot:
    """Worker reports summed at one moment."""

    t: float
    sums: dict[str, float]
    first_sync_min: float | None
    first_sync_max: float | None


@dataclass
class WorkerPool:
    """``processes`` workers sharing ``clients`` clients between them."""

    addresses: Sequence[str]
    clients: int
    processes: int = 2
    mode: str = "light"
    cpu: str = ""
    sample: float = 0.01
    hold: bool = False
    compression: bool = False
    spread: float = 0.0
    node_prefix: str = "load-node-"
    first_index: int = 0
    extra: Sequence[str] = ()
    full_clients: int = 0  # with mode light: this many full clients, spread over the workers
    workers: list[WorkerProcess] = field(default_factory=list, init=False)

    SUMMED = (
        "clients",
        "connected",
        "in_sync",
        "ever_in_sync",
        "kvs_delta",
        "kvs_snapshot",
        "kvs_catchup",
        "frames",
        "bytes",
        "connects",
        "connect_failures",
        "disconnects",
        "goodbyes",
        "snapshots",
        "resumes",
        "catchups",
        "protocol_errors",
        "read_timeouts",
        "unstamped",
        "cpu_s",
        "rss",
    )

    def start(self) -> WorkerPool:
        per = [self.clients // self.processes] * self.processes
        for i in range(self.clients % self.processes):
            per[i] += 1
        first = self.first_index
        full_left = self.full_clients
        for i, k in enumerate(per):
            if k == 0:
                continue
            share = min(k, -(-full_left // (self.processes - i)))  # ceil: spread them evenly
            full_left -= share
            args = [f"--addr={a}" for a in self.addresses]
            args += [
                "--clients",
                str(k),
                "--mode",
                self.mode,
                "--sample",
                str(self.sample),
                "--first-index",
                str(first),
                "--node-prefix",
                self.node_prefix,
                "--spread",
                str(self.spread),
                "--seed",
                str(first + 1),
                "--full-clients",
                str(share),
            ]
            if self.cpu:
                args += ["--cpu", self.cpu]
            if self.hold:
                args.append("--hold")
            if self.compression:
                args.append("--compression")
            args += list(self.extra)
            self.workers.append(WorkerProcess(args, worker_id=i))
            renice([self.workers[-1].pid], NICE)
            first += k
        return self

    def go(self, at: float | None = None, spread: float = 0.0) -> float:
        """With ``hold``: make every worker connect at wall time ``at`` (default: now + 1 s)."""
        at = at if at is not None else time.time() + 1.0
        for w in self.workers:
            w.send({"cmd": "start", "at": at, "spread": spread})
        return at

    def set_sample(self, p: float) -> None:
        for w in self.workers:
            w.send({"cmd": "sample", "p": p})

    def wait_reports(self, after: float, timeout: float = 10.0) -> None:
        """Wait until every worker has reported after wall time ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.snapshot()[0].get("t", 0) > after for w in self.workers):
                return
            time.sleep(0.05)

    def snapshot(self) -> PoolSnapshot:
        sums = dict.fromkeys(self.SUMMED, 0.0)
        ts: list[float] = []
        mins: list[float] = []
        maxs: list[float] = []
        for w in self.workers:
            s, _ = w.snapshot()
            for k in self.SUMMED:
                sums[k] += s.get(k) or 0
            ts.append(s.get("t", 0.0))
            if s.get("first_sync_min") is not None:
                mins.append(s["first_sync_min"])
            if s.get("first_sync_max") is not None:
                maxs.append(s["first_sync_max"])
        return PoolSnapshot(
            min(ts) if ts else 0.0,
            sums,
            min(mins) if mins else None,
            max(maxs) if maxs else None,
        )

    def latencies(self, t0: float, t1: float = float("inf")) -> list[float]:
        """Latency samples (ms) reported in the wall-clock window (t0, t1]."""
        out: list[float] = []
        for w in self.workers:
            _, lat = w.snapshot()
            out.extend(x for t, x in lat if t0 < t <= t1)
        return out

    def latency_series(self) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for w in self.workers:
            out.extend(w.snapshot()[1])
        return sorted(out)

    def history(self) -> list[list[dict[str, Any]]]:
        return [list(w.stats) for w in self.workers]

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += cpu_seconds(pid)
        return total

    def wait_until(self, pred: Any, timeout: float, poll: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.snapshot()):
                return True
            time.sleep(poll)
        return pred(self.snapshot())

    def stop(self) -> None:
        for w in self.workers:
            w.send({"cmd": "stop"})
        for w in self.workers:
            w.stop()


RESULTS = Path(".load-results")


def write_result(name: str, result: dict[str, Any]) -> None:
    """Write a benchmark's result to ``.load-results/<name>.json`` and show it."""
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=1)
    (RESULTS / f"{name}.json").write_text(text)
    print(text)


def control_channel(cpu: int | None) -> TextIO:
    """Set up a child process a benchmark drives over stdin/stdout: pin it to ``cpu`` (if
    given), keep fd 1 for the control replies (returned) and send everything else that prints,
    Typha's screen log included, to stderr."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    configure_logging(screen="WARNING", file_level="", sys_level="")
    return out
