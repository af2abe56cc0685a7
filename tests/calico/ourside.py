"""Our Typha as a separate process next to Calico's, and its key/value set as a syncdump-style dump.

`TyphaPy` runs `python -m typha.cli serve` the way an operator would (environment only, the same
variables Calico Typha reads), so start-up behaviour is the product's own.  `msgpack_dump` reads
the set our node client holds once in sync and shapes it like syncdump's output
(`compare.dump_from_state`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import trio

from felix_client.sync_client import SyncClient
from tests.calico.compare import dump_from_state
from tests.peers.calico_typha import TyphaProcess, typha_env
from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer


class TyphaPy(TyphaProcess):
    """typha-py on a random loopback port against an etcd or a kube-apiserver."""

    name = "typha-py"
    startup_timeout = 60.0

    def __init__(
        self,
        *,
        etcd: EtcdServer | None = None,
        kube: KubeApiServer | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float | None = None,
    ):
        super().__init__(etcd=etcd, kube=kube, extra_env=extra_env, startup_timeout=startup_timeout)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "typha.cli", "serve"]

    def _env(self) -> dict[str, str]:
        env = typha_env(self.tmpdir, self.port, self.health_port, etcd=self.etcd, kube=self.kube)
        env.update(self.extra_env)
        return env


async def msgpack_state(address: str, syncer_type: str, timeout: float = 30.0) -> dict[str, Any]:
    """The key/value set our node client holds once in sync with `address` for `syncer_type`."""
    client = SyncClient([address], "calico-compare", syncer_type, backoff_cap=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        with trio.fail_after(timeout):
            await client.in_sync.wait()
        state = dict(client.state)
        nursery.cancel_scope.cancel()
    return state


def msgpack_dump(address: str, syncer_type: str, timeout: float = 30.0) -> dict[str, Any]:
    """`msgpack_state` as a syncdump-shaped dump (values as a Go client would parse them)."""
    state = trio.run(msgpack_state, address, syncer_type, timeout)
    return dump_from_state(state, syncer_type)
