"""Calico's own client (its restart-aware syncclient, through tests/go/gobcheck) reconnects when
typha-py restarts on the same address, and reaches in-sync again with the full key set.

Calico's client retries a lost Typha only briefly: six connection attempts 100 ms apart (about
0.6 s, `startOneConnection` in typha/pkg/syncclient), then it gives up and Felix exits, to be
restarted by its supervisor. Starting a Python interpreter and importing typha takes 0.4 to 0.6 s
on its own (more on a loaded machine), so a plain `stop(); start()` usually lands after the
client has given up. The restarted process here therefore imports before the old one is
stopped and runs the product's own `serve` command as soon as the old listener is closed, so
that the time the address is closed is what a restarted Go binary would give. The negative
control at the end shows the budget is real: with no Typha back, the client gives up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from tests.calico.datasets import examples, load_etcd
from tests.calico.ourside import TyphaPy
from tests.peers.calico_typha import syncdump
from tests.peers.etcd import EtcdServer
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.process import loopback_client
from tests.server.gobclient import GoClient, require_gobcheck

# Imports everything `typha serve` needs, says so, then waits for the go-ahead on stdin.
PREWARMED = (
    "import sys\n"
    "import typha.app, typha.cli\n"
    "print('imported', flush=True)\n"
    "sys.stdin.readline()\n"
    "sys.exit(typha.cli.main(['serve']))\n"
)


def until(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def state_since_last_restart(client: GoClient) -> dict[str, dict[str, Any]] | None:
    """The client's key set as rebuilt after its last reconnection (None before any)."""
    state: dict[str, dict[str, Any]] | None = None
    for event in list(client.events):
        if event.get("restarted"):
            state = {}
        elif state is not None:
            for u in event.get("updates", ()):
                if u["value"] is None:
                    state.pop(u["key"], None)
                else:
                    state[u["key"]] = u
    return state


def in_sync_since_last_restart(client: GoClient) -> bool:
    seen_restart = False
    status = None
    for event in list(client.events):
        if event.get("restarted"):
            seen_restart, status = True, None
        elif "status" in event:
            status = event["status"]
    return seen_restart and status == 2


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect((LOOPBACK, port))
        except OSError:
            return True
    return False


class PrewarmedTyphaPy:
    """`typha serve` in an interpreter that has already imported it (see the module docstring),
    with the same environment as `like` except its health port."""

    def __init__(self, like: TyphaPy, log_path: Path):
        self.health_port = free_port()
        env = like._env() | {"TYPHA_HEALTHPORT": str(self.health_port)}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PREWARMED],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=like.tmpdir,
            start_new_session=True,
        )
        until(lambda: b"imported" in log_path.read_bytes(), "the imports", 60)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def status(self) -> dict[str, Any]:
        with loopback_client(timeout=2.0) as c:
            reply = c.get(f"http://{LOOPBACK}:{self.health_port}/status")
        result: dict[str, Any] = reply.json()
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def write_felix_config(etcd: EtcdServer, prefix: str) -> None:
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_writer import apply_resources

    resource = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"logPrefix": prefix},
    }

    async def write() -> None:
        async with EtcdClient([etcd.client_url]) as client:
            await apply_resources(client, [resource])

    trio.run(write)


def test_calicos_client_reconnects_after_typha_py_restarts_on_the_same_address(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    require_gobcheck(restart=True)
    load_etcd(etcd_server, examples())
    first = TyphaPy(etcd=etcd_server)
    second: PrewarmedTyphaPy | None = None
    client: GoClient | None = None
    try:
        first.start()
        client = GoClient(first.address, "felix", restart=True)
        until(lambda: client is not None and client.in_sync, "in sync from the first Typha")
        before = client.state()
        assert len(before) > 30, sorted(before)

        second = PrewarmedTyphaPy(first, tmp_path / "second.log")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGTERM)  # drain: the listener closes, then the connection
        until(lambda: port_closed(first.port), "the first Typha's listener to close", 10)
        second.go()
        until(
            lambda: client is not None and in_sync_since_last_restart(client),
            f"in sync again after the restart\n{client.stderr}",
        )
        assert not any(e.get("finished") for e in client.events), client.stderr
        # The old process is gone; the client is served by the new one.
        first.stop()
        clients = second.status()["clients"]
        assert [(c["node"], c["syncer"]) for c in clients] == [("gobcheck-node", "felix")]

        # The full key set again, received after the reconnection, with the same values...
        after = state_since_last_restart(client)
        assert after is not None
        assert sorted(after) == sorted(before)
        assert {k: u["value"] for k, u in after.items()} == {
            k: u["value"] for k, u in before.items()
        }
        # ...and what a fresh client of the restarted Typha gets.
        fresh = syncdump(first.address, "felix", timeout=30)
        assert sorted(e["key"] for e in fresh["kvs"]) == sorted(after)

        # The connection is live: a later change reaches the client.
        write_felix_config(etcd_server, "after-restart")
        until(
            lambda: (
                client is not None
                and (state_since_last_restart(client) or {})
                .get("/calico/v1/config/LogPrefix", {})
                .get("value")
                == "after-restart"
            ),
            "an update after the reconnection",
        )

        # Negative control: with no Typha back within the client's retry budget, Calico's
        # client gives up (so the reconnection above is not a given).
        second.close()
        until(
            lambda: client is not None and any(e.get("finished") for e in client.events),
            "the client to give up",
            15,
        )
        assert "failed to connect to Typha after 6 tries" in client.stderr
    finally:
        if client is not None:
            client.close()
        if second is not None:
            second.close()
        first.close()
