"""``felix-client run`` with ``--dry-run`` / ``--netns``: the CLI wires a NodeAgent to its
SyncClient, serves Felix's metrics and programs (or renders) the node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from felix_client.dataplane.dryrun import FILES
from tests.dataplane import sample
from tests.dataplane.nstools import NetnsPool, ipset_members, iptables_save
from tests.peers.ports import free_ports
from typha.app import Typha
from typha.config import load_config
from typha.sync.memory import MemoryDatastore


def typha_with_sample() -> Typha:
    cfg = load_config(
        environ={}, overrides={"ServerPort": -1, "ServerHost": "127.0.0.1", "LogFilePath": "none"}
    )
    return Typha(cfg, MemoryDatastore(dict(sample.sample_kvs())))


async def run_cli(*args: str, until: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "CALICO_"))}
    with trio.fail_after(until):
        return await trio.run_process(
            [sys.executable, "-m", "felix_client.cli", "run", "--status-interval", "0", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


async def wait_for_file(path: Path, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not path.exists():
            await trio.sleep(0.05)


async def test_cli_dry_run_writes_files_and_serves_metrics(tmp_path: Path) -> None:
    (metrics_port,) = free_ports(1)
    typha = typha_with_sample()
    scraped: list[str] = []

    async def scrape_when_ready() -> None:
        await wait_for_file(tmp_path / "ipsets")

        def get() -> str:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            return httpx.get(url, timeout=5, trust_env=False).text

        scraped.append(await trio.to_thread.run_sync(get))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(typha.run)
        nursery.start_soon(scrape_when_ready)
        result = await run_cli(
            "--node",
            sample.NODE,
            "--typha",
            f"127.0.0.1:{port}",
            "--dry-run",
            str(tmp_path),
            "--metrics-port",
            str(metrics_port),
            "--duration",
            "4",
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert sorted(os.listdir(tmp_path)) == sorted(FILES)
    assert "-A cali-pi-" in (tmp_path / "iptables-filter").read_text()
    assert scraped and "felix_resync_state 3.0" in scraped[0]
    assert "felix_active_local_endpoints 2.0" in scraped[0]


@pytest.mark.netns
async def test_cli_netns_programs_the_namespace(netns: NetnsPool) -> None:
    node = netns.create("n1")
    typha = typha_with_sample()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(typha.run)
        result = await run_cli(
            "--node",
            sample.NODE,
            "--typha",
            f"127.0.0.1:{port}",
            "--netns",
            node,
            "--metrics-port",
            "0",
            "--duration",
            "4",
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    save = iptables_save(node)
    assert ":cali-FORWARD" in save and '--comment "cali:hook" -j cali-FORWARD' in save
    assert ipset_members(node)["cali40network-ip-pools"] == {sample.POOL}
