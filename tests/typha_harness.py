"""Helpers to run a real Typha (feed + server) inside a trio test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import trio

from typha.app import cache_settings, server_settings, server_tls_settings
from typha.cache.feed import CacheFeed
from typha.config import Config, load_config
from typha.model.keys import workload_endpoint_key
from typha.server.server import SyncServer
from typha.sync.base import Datastore
from typha.tls import server_ssl_context


@dataclass
class RunningTypha:
    cfg: Config
    feed: CacheFeed
    server: SyncServer
    datastore: Datastore
    port: int
    cancel: trio.CancelScope

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def make_config(**overrides: Any) -> Config:
    base = {"ServerPort": -1, "ServerHost": "127.0.0.1", "LogFilePath": "none"}
    base.update(overrides)
    return load_config(environ={}, overrides=base)


@asynccontextmanager
async def run_typha(
    datastore: Datastore,
    cfg: Config | None = None,
    *,
    epoch: int | None = None,
    wait_in_sync: bool = True,
    **view_kwargs: Any,
) -> AsyncIterator[RunningTypha]:
    cfg = cfg or make_config()
    feed = CacheFeed.from_settings(replace(cache_settings(cfg), **view_kwargs))
    ssl_ctx = None
    tls = server_tls_settings(cfg)
    if tls is not None:
        ssl_ctx = server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file)
    server = SyncServer(server_settings(cfg), feed, epoch=epoch, ssl_context=ssl_ctx)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(datastore.run, feed)
        port = await nursery.start(server.run)
        if wait_in_sync:
            with trio.fail_after(30):
                while not feed.in_sync:
                    await trio.sleep(0.01)
        yield RunningTypha(cfg, feed, server, datastore, port, nursery.cancel_scope)
        nursery.cancel_scope.cancel()


# --- Shared by the server, cache, sync and fuzz tests -----------------------------------------


def wep(i: int, *, rev: int = 0, pad: int = 0) -> tuple[str, dict[str, Any]]:
    key = workload_endpoint_key(f"node{i % 7}", "k8s", f"ns/pod{i}", "eth0")
    value = {
        "name": f"cali{i:011d}",
        "ipv4_nets": [f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}/32"],
        "labels": {"app": f"a{i % 5}", "rev": str(rev)},
        "profile_ids": ["kns.ns"],
    }
    if pad:
        value["annotations"] = {"pad": "x" * pad}
    return key, value


async def wait_until(pred, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)
