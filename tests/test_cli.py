"""The console scripts as a user runs them: typha serve/check-config/version, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
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
    """A die-on-fail key stops the start; any other bad value is a warning and the default."""
    out = run("typha.cli", "serve", env={"TYPHA_DATASTORETYPE": "consul"})
    assert out.returncode == 2
    assert "DatastoreType='consul'" in out.stderr and "env:TYPHA_DATASTORETYPE" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = run("typha.cli", "check-config", env={"TYPHA_SERVERPINGINTERVALSECS": "often"})
    assert out.returncode == 0
    assert "ServerPingIntervalSecs='often'" in out.stderr and "using the default 10.0" in out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ServerPingIntervalSecs "))
    assert "10.0" in line and "env:TYPHA_SERVERPINGINTERVALSECS was invalid" in line


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


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


HOSTILE_NUMBERS = {
    # Before: 167k pings in 3 s, a spinning governor and cache saver, every client reset by a
    # zero handshake timeout; nan crashed on the first client; inf disabled the timeouts.
    "none": {
        "TYPHA_SERVERPINGINTERVALSECS": "none",
        "TYPHA_SERVERHANDSHAKETIMEOUTSECS": "none",
        "TYPHA_CONNECTIONDROPINTERVALSECS": "none",
        "TYPHA_CACHESAVEINTERVALSECS": "none",
        "TYPHA_SERVERWRITETIMEOUTSECS": "none",
        "TYPHA_SERVERPONGTIMEOUTSECS": "none",
    },
    "nan": {
        "TYPHA_SERVERPINGINTERVALSECS": "nan",
        "TYPHA_SERVERHANDSHAKETIMEOUTSECS": "nan",
        "TYPHA_CONNECTIONDROPINTERVALSECS": "nan",
        "TYPHA_CACHESAVEINTERVALSECS": "nan",
        "TYPHA_SERVERWRITETIMEOUTSECS": "nan",
        "TYPHA_SERVERPONGTIMEOUTSECS": "nan",
    },
    "inf": {
        "TYPHA_SERVERPINGINTERVALSECS": "inf",
        "TYPHA_SERVERHANDSHAKETIMEOUTSECS": "-inf",
        "TYPHA_CONNECTIONDROPINTERVALSECS": "1e400",
        "TYPHA_CACHESAVEINTERVALSECS": "inf",
        "TYPHA_SERVERWRITETIMEOUTSECS": "inf",
        "TYPHA_SERVERPONGTIMEOUTSECS": "1e300",
    },
    # Positive control: a valid short ping interval is taken, and the test sees its pings.
    "valid": {"TYPHA_SERVERPINGINTERVALSECS": "0.25", "TYPHA_CACHESAVEINTERVALSECS": "1"},
}


@pytest.mark.parametrize("name", list(HOSTILE_NUMBERS))
async def test_none_nan_inf_settings_never_spin_flood_or_crash(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    values, expect_pings, tmp = HOSTILE_NUMBERS[name], name == "valid", tmp_path
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "true",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_CACHEFILEPATH": str(tmp / "cache.msgpack"),
        **values,
    }
    checked = run("typha.cli", "check-config", env=env)
    assert checked.returncode == 0, checked.stderr
    effective = {ln.split()[0]: ln.split()[1] for ln in checked.stdout.splitlines()}
    if not expect_pings:
        # Every hostile duration became its default (Typha's rule), with a warning if invalid.
        assert effective["ServerPingIntervalSecs"] == "10.0"
        assert effective["ServerHandshakeTimeoutSecs"] == "10.0"
        assert effective["ServerWriteTimeoutSecs"] == "120.0"
        assert effective["ConnectionDropIntervalSecs"] == "1.0"
        assert effective["CacheSaveIntervalSecs"] == "30.0"
    proc = subprocess.Popen(
        [PY, "-m", "typha.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        client = SyncClient([f"127.0.0.1:{port}"], "n1", backoff_cap=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(20):
                await client.in_sync.wait()
            frames, cpu = client.stats.frames, _cpu_seconds(proc.pid)
            await trio.sleep(3)
            frames, cpu = client.stats.frames - frames, _cpu_seconds(proc.pid) - cpu
            nursery.cancel_scope.cancel()
        assert proc.poll() is None, "typha exited"
        assert client.stats.disconnects == 0 and client.stats.connects == 1, client.stats
        assert cpu < 1.0, f"{cpu:.2f} CPU-seconds in 3 s idle: a busy loop"
        if expect_pings:
            assert frames >= 6, frames  # control: pings every 0.25 s are seen
        else:
            assert frames <= 2, f"{frames} frames in 3 s idle: a ping flood"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _operator_mistakes(tmp) -> dict[str, tuple[dict[str, str], str]]:  # type: ignore[no-untyped-def]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    _BUSY.append(busy)  # closed at the end of the test
    port = str(busy.getsockname()[1])
    (tmp / "cachedir").mkdir()
    (tmp / "bad.pem").write_text("this is not PEM\n")
    bad = str(tmp / "bad.pem")
    etcd = {"TYPHA_DATASTOREINMEMORY": "false"}
    return {
        "port in use": (
            {"TYPHA_SERVERPORT": port},
            f"ServerPort={port} on 127.0.0.1: already in use",
        ),
        "health port in use": (
            {
                "TYPHA_HEALTHENABLED": "true",
                "TYPHA_HEALTHHOST": "127.0.0.1",
                "TYPHA_HEALTHPORT": port,
            },
            f"HealthPort={port} on 127.0.0.1: already in use",
        ),
        "unresolvable host": (
            {"TYPHA_SERVERHOST": "nonexistent.invalid"},
            "ServerHost='nonexistent.invalid': cannot resolve it",
        ),
        "bad endpoint URL": (
            {**etcd, "TYPHA_ETCDENDPOINTS": "http//127.0.0.1:2379"},
            "EtcdEndpoints='http//127.0.0.1:2379': not an etcd URL",
        ),
        "bad endpoint scheme": (
            {**etcd, "TYPHA_ETCDENDPOINTS": "ftp://127.0.0.1:2379"},
            "EtcdEndpoints='ftp://127.0.0.1:2379': the scheme must be http or https",
        ),
        "cache path is a directory": (
            {"TYPHA_CACHEFILEPATH": str(tmp / "cachedir")},
            f"CacheFilePath='{tmp / 'cachedir'}': is a directory",
        ),
        "non-PEM TLS file": (
            {
                "TYPHA_SERVERCERTFILE": bad,
                "TYPHA_SERVERKEYFILE": bad,
                "TYPHA_CAFILE": bad,
                "TYPHA_CLIENTCN": "calico-node",
            },
            f"ServerCertFile='{bad}' / ServerKeyFile='{bad}': not a PEM certificate",
        ),
        "unwritable log path": (
            {"TYPHA_LOGFILEPATH": "/proc/nope/typha.log"},
            "LogFilePath='/proc/nope/typha.log': cannot write it",
        ),
    }


_BUSY: list[socket.socket] = []
MISTAKES = [
    "port in use",
    "health port in use",
    "unresolvable host",
    "bad endpoint URL",
    "bad endpoint scheme",
    "cache path is a directory",
    "non-PEM TLS file",
    "unwritable log path",
]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_operator_mistakes_give_one_line_and_exit_code_2(tmp_path, mistake: str) -> None:  # type: ignore[no-untyped-def]
    try:
        env, message = _operator_mistakes(tmp_path)[mistake]
        base = {
            "TYPHA_DATASTOREINMEMORY": "true",
            "TYPHA_SERVERHOST": "127.0.0.1",
            "TYPHA_SERVERPORT": str(free_ports(1)[0]),
            "TYPHA_LOGFILEPATH": "none",
        }
        out = run("typha.cli", "serve", env={**base, **env})
        assert out.returncode == 2, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]
    finally:
        while _BUSY:
            _BUSY.pop().close()


def test_positive_control_the_same_settings_when_valid_start() -> None:
    """The checks pass a good configuration: a free port, a resolvable host, an etcd URL,
    a writable log file; the process starts and keeps running."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (port,) = free_ports(1)
        env = {
            **os.environ,
            "TYPHA_DATASTOREINMEMORY": "false",  # etcd mode: the endpoint URLs are checked
            "TYPHA_SERVERHOST": "localhost",
            "TYPHA_SERVERPORT": str(port),
            # Nothing listens there: Typha starts and retries, as it should for an etcd outage.
            "TYPHA_ETCDENDPOINTS": f"http://127.0.0.1:{free_ports(1)[0]},localhost:2379",
            "TYPHA_LOGFILEPATH": f"{tmp}/logs/typha.log",
            "TYPHA_CACHEFILEPATH": f"{tmp}/cache.msgpack",
        }
        proc = subprocess.Popen(
            [PY, "-m", "typha.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert os.path.exists(f"{tmp}/logs/typha.log")
        finally:
            proc.terminate()
            proc.wait(15)
            if proc.stderr:
                proc.stderr.close()
