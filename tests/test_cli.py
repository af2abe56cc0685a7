"""The console scripts as a user runs them: typha serve/check-config/version, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import trio

from felix_client.sync_client import SyncClient

from .peers.ports import free_ports

PY = sys.executable


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version_and_help() -> None:
    out = run("typha.cli", "version")
    assert out.returncode == 0 and out.stdout.startswith("typha-py ")
    for args in (
        ("typha.cli", "--help"),
        ("typha.cli", "serve", "--help"),
        ("felix_client.cli", "run", "--help"),
    ):
        assert run(*args).returncode == 0


def test_check_config_shows_values_and_sources() -> None:
    out = run("typha.cli", "check-config", env={"TYPHA_SERVERPORT": "6000"})
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ServerPort "))
    assert "6000" in line and "env:TYPHA_SERVERPORT" in line
    default = next(ln for ln in out.stdout.splitlines() if ln.startswith("HealthPort "))
    assert "9098" in default and "default" in default


def test_bad_config_value_exits_with_a_clear_error() -> None:
    out = run("typha.cli", "serve", env={"TYPHA_SERVERPINGINTERVALSECS": "often"})
    assert out.returncode == 2
    assert (
        "ServerPingIntervalSecs='often'" in out.stderr
        and "env:TYPHA_SERVERPINGINTERVALSECS" in out.stderr
    )


async def test_sigterm_drains_clients_with_goodbyes() -> None:
    port, health = free_ports(2)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "true",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHPORT": str(health),
        "TYPHA_HEALTHHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_SHUTDOWNTIMEOUTSECS": "2",
        "TYPHA_LOGFORMAT": "json",
    }
    proc = subprocess.Popen(
        [PY, "-m", "typha.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        clients = [SyncClient([f"127.0.0.1:{port}"], f"n{i}", backoff_cap=0.2) for i in range(5)]
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run)
            with trio.fail_after(20):
                for c in clients:
                    await c.in_sync.wait()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                while not all(c.stats.goodbyes for c in clients):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert all(c.stats.last_goodbye == "server shutting down" for c in clients)
        code = await trio.to_thread.run_sync(proc.wait, 15)
        took = time.monotonic() - started
        assert code == 0, proc.stdout.read() if proc.stdout else ""
        assert 0.5 < took < 10, took
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
