"""TLS and etcd password authentication with EtcdAPI=grpc (GrpcEtcdClient), against a real etcd.

The gateway client's own TLS and auth tests (tests/sync/test_etcd_client.py: mutual TLS, no
client cert, no CA; password auth, re-authentication after an etcd restart and after an
invalidated token for a unary call and a watch, wrong password, no credentials, a
prefix-limited user; credentials against etcd without auth) and the datastore's (TLS plus
password auth from the configuration; a wrong password keeps it disconnected) run here again
with the gRPC client in their place. The tests below them run with both clients, to show the
two classify failures alike: a wrong CA, a missing client cert, TLS and auth together, token
refresh after ``token_max_age``.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import tests.sync.test_etcd_client as base
import tests.sync.test_etcd_datastore as ds_base
from tests.peers.etcd import EtcdServer, EtcdTLS
from tests.peers.plugin import EtcdFactory
from tests.peers.ports import LOOPBACK
from typha.config import load_config
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import (
    AuthenticationFailed,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    WatchCanceled,
    prefix_range_end,
)
from typha.sync.etcd_grpc import GrpcEtcdClient

PREFIX = base.PREFIX
CLIENTS = pytest.mark.parametrize("client_cls", [EtcdClient, GrpcEtcdClient], ids=["gw", "grpc"])
_made: list[GrpcEtcdClient] = []


class _CountedGrpcClient(GrpcEtcdClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _made.append(self)


@pytest.fixture
def grpc_in_gateway_tests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The gateway tests' module global ``EtcdClient`` is the gRPC client for the test (and
    afterwards: gRPC clients were really the ones used)."""
    _made.clear()
    monkeypatch.setattr(base, "EtcdClient", _CountedGrpcClient)
    yield
    assert _made, "the borrowed test made no gRPC client"


# --- the gateway client's TLS and auth tests, with GrpcEtcdClient ------------------------------


async def test_mutual_tls(
    grpc_in_gateway_tests: None, etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    await base.test_mutual_tls(etcd_factory, tmp_path)


async def test_password_auth_and_reauthentication(
    grpc_in_gateway_tests: None, etcd_server: EtcdServer
) -> None:
    await base.test_password_auth_and_reauthentication(etcd_server)


async def test_credentials_against_server_without_auth(
    grpc_in_gateway_tests: None, etcd_server: EtcdServer
) -> None:
    await base.test_credentials_against_server_without_auth(etcd_server)


class _RecordedDatastore(EtcdDatastore):
    made: list[EtcdDatastore] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(self)


async def test_tls_and_password_auth_from_config(
    monkeypatch: pytest.MonkeyPatch, etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    """The datastore test with EtcdAPI=grpc added to its configuration."""

    def grpc_config(*, environ: dict[str, str], overrides: dict[str, Any]) -> Any:
        return load_config(environ=environ, overrides={**overrides, "EtcdAPI": "grpc"})

    _RecordedDatastore.made = []
    monkeypatch.setattr(ds_base, "load_config", grpc_config)
    monkeypatch.setattr(ds_base, "EtcdDatastore", _RecordedDatastore)
    await ds_base.test_tls_and_password_auth_from_config(etcd_factory, tmp_path)
    assert len(_RecordedDatastore.made) == 2
    assert all(ds.api == "grpc" for ds in _RecordedDatastore.made)
    assert all(isinstance(ds.make_client(), GrpcEtcdClient) for ds in _RecordedDatastore.made)
    assert _RecordedDatastore.made[0].watches_started > 0


# --- both clients -------------------------------------------------------------------------------


@CLIENTS
async def test_tls_failures_name_each_endpoint(
    client_cls: type[EtcdClient], etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    """A server cert from another CA, and no client cert: EtcdUnavailable naming the endpoint
    and what it said, for unary calls and watches; the same client set up right works."""
    tls = EtcdTLS.generate(tmp_path / "etcd")
    other = EtcdTLS.generate(tmp_path / "other")
    etcd = etcd_factory(tls=tls)
    mine = {"cert_file": tls.client_cert_file, "key_file": tls.client_key_file}

    # Positive control: the right CA and a client cert, host:port taken as https.
    async with client_cls([etcd.endpoint], ca_file=tls.ca_file, **mine) as c:  # type: ignore[arg-type]
        assert c.endpoints == [etcd.client_url]
        await c.put(PREFIX + "k", b"v")
        assert (await c.range(PREFIX + "k")).kvs[0].value == b"v"

    async with client_cls([etcd.endpoint], ca_file=other.ca_file, **mine) as c:  # type: ignore[arg-type]
        with pytest.raises(EtcdUnavailable, match="CERTIFICATE_VERIFY_FAILED") as info:
            await c.range(PREFIX + "k")
        assert f"no etcd endpoint answered: {etcd.client_url}: " in info.value.message
        with pytest.raises(EtcdUnavailable, match="CERTIFICATE_VERIFY_FAILED") as info:
            async with c.watch(PREFIX, prefix_range_end(PREFIX)):
                pass
        assert f"no etcd endpoint accepted the watch: {etcd.client_url}: " in info.value.message

    async with client_cls([etcd.client_url], ca_file=tls.ca_file) as c:
        with pytest.raises(EtcdUnavailable) as info:
            await c.range(PREFIX + "k")
        assert f"no etcd endpoint answered: {etcd.client_url}: " in info.value.message
        if client_cls is GrpcEtcdClient:
            # TLS 1.3: the server refuses the client after the client's side of the handshake
            # ended, by an alert that the first read meets (httpx says only "ReadError").
            assert "CERTIFICATE_REQUIRED" in info.value.message, info.value.message


@CLIENTS
async def test_tls_and_auth_together(
    client_cls: type[EtcdClient], etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    tls = EtcdTLS.generate(tmp_path)
    etcd = etcd_factory(tls=tls)
    etcd.enable_auth("typha", "s3cret")
    files = {
        "ca_file": tls.ca_file,
        "cert_file": tls.client_cert_file,
        "key_file": tls.client_key_file,
    }
    async with client_cls([etcd.endpoint], username="typha", password="s3cret", **files) as c:  # type: ignore[arg-type]
        rev = await c.put(PREFIX + "a", b"1")
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        # Maintenance/Status needs an authenticated user too.
        assert (await c.status())["version"].startswith("3.")
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert (await base.collect_events(stream, 1))[0].kv.value == b"1"
        # An invalidated token, over TLS: re-authenticated once, for a call and a watch.
        generation = c._token_generation
        c._token = "expired.1"
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        c._token = "expired.1"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert len(await base.collect_events(stream, 1)) == 1
        assert c._token_generation == generation + 2
        # After a restart the TLS connections are new and the old token may be gone.
        await trio.to_thread.run_sync(etcd.restart)
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        async with c.watch(PREFIX, prefix_range_end(PREFIX), start_revision=rev) as stream:
            assert len(await base.collect_events(stream, 1)) == 1
    # Negative: the right TLS but the wrong password; the right TLS and no credentials.
    async with client_cls([etcd.endpoint], username="typha", password="nope", **files) as c:  # type: ignore[arg-type]
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            await c.range(PREFIX + "a")
    # Without credentials etcd's gRPC server takes the user from the client cert's CommonName
    # (none here: permission denied); behind the gateway the user is simply missing.
    refused = "permission denied" if client_cls is GrpcEtcdClient else "user name is empty"
    async with client_cls([etcd.endpoint], **files) as c:  # type: ignore[arg-type]
        with pytest.raises(EtcdError, match=refused):
            await c.range(PREFIX + "a")
        with pytest.raises(WatchCanceled, match=refused):
            async with c.watch(PREFIX, prefix_range_end(PREFIX)):
                pass


@CLIENTS
async def test_token_refreshed_after_token_max_age(
    client_cls: type[EtcdClient], etcd_server: EtcdServer
) -> None:
    etcd_server.enable_auth("typha", "s3cret")
    async with client_cls(
        [etcd_server.client_url], username="typha", password="s3cret", token_max_age=0.3
    ) as c:
        await c.put(PREFIX + "a", b"1")
        first = c._token
        generation = c._token_generation
        # Within the age: the same token.
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        assert c._token == first and c._token_generation == generation
        await trio.sleep(0.4)
        assert (await c.range(PREFIX + "a")).kvs[0].value == b"1"
        assert c._token_generation == generation + 1 and c._token not in (None, first)


async def test_grpc_needs_http2_agreed_by_alpn(tmp_path: Path) -> None:
    """A TLS server that picks HTTP/1.1 by ALPN (as etcd would for a client offering no "h2"):
    EtcdUnavailable saying so, not an HTTP/2 protocol error. etcd itself picks h2
    (test_mutual_tls above is the positive control)."""
    tls = EtcdTLS.generate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls.cert_file, tls.key_file)
    server_ctx.set_alpn_protocols(["http/1.1"])

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.do_handshake()
            await stream.receive_some()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host=LOOPBACK)
        )
        port = listener.transport_listener.socket.getsockname()[1]
        async with GrpcEtcdClient([f"{LOOPBACK}:{port}"], ca_file=tls.ca_file) as c:
            with pytest.raises(EtcdUnavailable, match="did not agree to HTTP/2 over TLS"):
                await c.range(PREFIX + "a")
        nursery.cancel_scope.cancel()
