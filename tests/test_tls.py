"""Felix↔Typha TLS with Typha's rules: client certificate required; CN or URI SAN must match."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.typha_harness import make_config, run_typha
from typha.sync.memory import MemoryDatastore
from typha.tls import client_ssl_context

from .tlsutil import TLSFiles

SPIFFE = "spiffe://cluster.local/ns/kube-system/sa/calico-node"


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return TLSFiles(tmp_path)


def server_cfg(tls: TLSFiles, **extra: str):  # type: ignore[no-untyped-def]
    cert, key = tls.issue("server", cn="typha-server")
    return make_config(
        ServerCertFile=cert,
        ServerKeyFile=key,
        CAFile=tls.ca_file,
        ServerHandshakeTimeoutSecs=2,
        **extra,
    )


async def try_sync(address: str, ctx, *, server_cn: str = "typha-server") -> SyncClient:  # type: ignore[no-untyped-def]
    client = SyncClient(
        [address],
        "node-1",
        ssl_context=ctx,
        server_cn=server_cn,
        backoff_cap=0.2,
        connect_timeout=3,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        with trio.move_on_after(3):
            await client.in_sync.wait()
        nursery.cancel_scope.cancel()
    return client


async def test_right_cn_is_served_and_wrong_cn_and_plaintext_are_refused(tls: TLSFiles) -> None:
    ds = MemoryDatastore({"/calico/v1/config/LogSeverityScreen": "Info"})
    async with run_typha(ds, server_cfg(tls, ClientCN="calico-node")) as typha:
        good_cert, good_key = tls.issue("good", cn="calico-node")
        good = await try_sync(typha.address, client_ssl_context(good_cert, good_key, tls.ca_file))
        assert good.in_sync.is_set() and good.state == ds.data

        bad_cert, bad_key = tls.issue("bad", cn="intruder")
        bad = await try_sync(typha.address, client_ssl_context(bad_cert, bad_key, tls.ca_file))
        assert not bad.in_sync.is_set() and bad.state == {}

        plain = await try_sync(typha.address, None)
        assert not plain.in_sync.is_set() and plain.state == {}
        assert plain.stats.connects >= 1  # the TCP connection was made, then refused


async def test_uri_san_is_served_and_other_uri_refused(tls: TLSFiles) -> None:
    ds = MemoryDatastore({"/calico/v1/config/X": "1"})
    async with run_typha(ds, server_cfg(tls, ClientURISAN=SPIFFE)) as typha:
        cert, key = tls.issue("spiffe", cn="whatever", uri=SPIFFE)
        ok = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert ok.in_sync.is_set()
        cert, key = tls.issue("other", cn="calico-node", uri=SPIFFE + "-other")
        refused = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert not refused.in_sync.is_set()


async def test_client_checks_the_servers_identity(tls: TLSFiles) -> None:
    ds = MemoryDatastore({"/calico/v1/config/X": "1"})
    async with run_typha(ds, server_cfg(tls, ClientCN="calico-node")) as typha:
        cert, key = tls.issue("good", cn="calico-node")
        ctx = client_ssl_context(cert, key, tls.ca_file)
        wrong = await try_sync(typha.address, ctx, server_cn="not-typha")
        assert not wrong.in_sync.is_set() and "refused" in wrong.stats.last_error
        right = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert right.in_sync.is_set()


def test_partial_tls_config_is_rejected(tls: TLSFiles) -> None:
    from typha.config import ConfigError

    cert, key = tls.issue("server")
    with pytest.raises(ConfigError, match="TLS"):
        make_config(ServerCertFile=cert, ServerKeyFile=key, CAFile=tls.ca_file)
