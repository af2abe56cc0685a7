"""A local stack for load runs: a real etcd (data on tmpfs) and one or more `typha serve`
processes on loopback, started and stopped together. Used by `make load` and `make soak`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from load.local_etcd import LocalEtcd, find_etcd, free_port


@dataclass
class TyphaProc:
    proc: subprocess.Popen[bytes]
    port: int
    health_port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/status"


@dataclass
class Stack:
    etcd: LocalEtcd
    typhas: list[TyphaProc] = field(default_factory=list)

    @property
    def etcd_url(self) -> str:
        return self.etcd.url


def typha_env(
    etcd_url: str,
    port: int,
    health: int,
    metrics: int | None,
    shutdown_secs: float,
    log_level: str = "WARNING",
) -> dict[str, str]:
    """The environment of a ``typha serve`` on loopback: this etcd, these ports, logs to the
    screen only, at ``log_level``."""
    env = {
        **os.environ,
        "TYPHA_ETCDENDPOINTS": etcd_url,
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHPORT": str(health),
        "TYPHA_HEALTHHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": log_level,
        "TYPHA_SHUTDOWNTIMEOUTSECS": f"{shutdown_secs:g}",
    }
    if metrics is not None:
        env["TYPHA_PROMETHEUSMETRICSENABLED"] = "true"
        env["TYPHA_PROMETHEUSMETRICSPORT"] = str(metrics)
        env["TYPHA_PROMETHEUSMETRICSHOST"] = "127.0.0.1"
    return env


def start_typha(
    etcd_url: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> TyphaProc:
    port, health, metrics = free_port(), free_port(), free_port()
    env = {**typha_env(etcd_url, port, health, metrics, shutdown_secs=5), **(extra_env or {})}
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{health}/readiness", timeout=2).status_code == 200:
                return TyphaProc(proc, port, health, metrics)
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"typha exited ({proc.returncode}); see {log_path}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"typha not ready in 120 s; see {log_path}")


@contextmanager
def local_stack(
    n_typhas: int = 1, *, results: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    binary = find_etcd()
    if binary is None:
        raise SystemExit("no etcd binary: run `make setup`")
    results.mkdir(parents=True, exist_ok=True)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        etcd = LocalEtcd(binary, Path(tmp) / "etcd")
        etcd.start()
        stack = Stack(etcd)
        try:
            for i in range(n_typhas):
                stack.typhas.append(start_typha(etcd.url, results / f"typha-{i}.log", extra_env))
            yield stack
        finally:
            for t in stack.typhas:
                t.proc.terminate()
            for t in stack.typhas:
                try:
                    t.proc.wait(30)
                except subprocess.TimeoutExpired:
                    t.proc.kill()
            etcd.stop()


def typha_load_command(
    stack: Stack,
    typha: TyphaProc,
    *,
    clients: int,
    rate: float,
    duration: float,
    full_clients: int,
    out: Path,
    processes: int | None = None,
) -> list[str]:
    """The ``load.typha_load`` command that drives ``typha`` of ``stack``, writing its JSON and
    plot to ``out`` plus ``.json`` and ``.png``."""
    cmd = [
        sys.executable,
        "-m",
        "load.typha_load",
        "--typha",
        typha.address,
        "--etcd",
        stack.etcd_url,
        "--clients",
        str(clients),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
    ]
    if processes is not None:
        cmd += ["--processes", str(processes)]
    cmd += [
        "--full-clients",
        str(full_clients),
        "--typha-pid",
        str(typha.proc.pid),
        "--typha-metrics",
        f"http://127.0.0.1:{typha.metrics_port}/metrics",
        "--json",
        str(out.parent / f"{out.name}.json"),
        "--plot",
        str(out.parent / f"{out.name}.png"),
    ]
    return cmd
