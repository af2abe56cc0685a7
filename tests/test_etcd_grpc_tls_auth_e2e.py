"""EtcdAPI=grpc with TLS and etcd password authentication end to end: ``typha serve`` configured
as an operator would (TLS files, an https endpoint, a username and password, EtcdAPI=grpc)
against a real etcd with client-certificate and password authentication, and a client that gets
in sync and receives a delta through the gRPC watch. Next to it, the same etcd refuses the same
Typha when its password is wrong: Typha reports the authentication failure and serves no data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.etcd import EtcdServer, EtcdTLS
from tests.peers.plugin import EtcdFactory
from tests.peers.ports import free_ports
from tests.sync.test_etcd_datastore import model_keys, wep
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources

PY = sys.executable


@pytest.fixture
def secure_etcd(etcd_factory: EtcdFactory, tmp_path: Path) -> tuple[EtcdServer, EtcdTLS]:
    tls = EtcdTLS.generate(tmp_path / "pki")
    etcd = etcd_factory(tls=tls)
    etcd.enable_auth("typha", "s3cret")
    return etcd, tls


def _writer(etcd: EtcdServer, tls: EtcdTLS) -> EtcdClient:
    return EtcdClient(
        [etcd.client_url],
        ca_file=tls.ca_file,
        cert_file=tls.client_cert_file,
        key_file=tls.client_key_file,
        username="typha",
        password="s3cret",
    )


@contextmanager
def _typha(etcd: EtcdServer, tls: EtcdTLS, password: str) -> Iterator[tuple[int, list[str]]]:
    """``typha serve`` with EtcdAPI=grpc, TLS and credentials; yields (port, its output lines
    once it stopped: filled in after the ``with``)."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "false",
        "TYPHA_ETCDENDPOINTS": etcd.client_url,
        "TYPHA_ETCDAPI": "grpc",
        "TYPHA_ETCDCAFILE": tls.ca_file,
        "TYPHA_ETCDCERTFILE": str(tls.client_cert_file),
        "TYPHA_ETCDKEYFILE": str(tls.client_key_file),
        "TYPHA_ETCDUSERNAME": "typha",
        "TYPHA_ETCDPASSWORD": password,
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": "info",
        "TYPHA_LOGFORMAT": "json",
    }
    proc = subprocess.Popen(
        [PY, "-m", "typha.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        yield port, lines
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        lines.extend(out.splitlines())


def _records(lines: list[str]) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def test_typha_serves_through_grpc_with_tls_and_auth(
    secure_etcd: tuple[EtcdServer, EtcdTLS],
) -> None:
    etcd, tls = secure_etcd
    async with _writer(etcd, tls) as writer:
        await apply_resources(writer, [wep(i) for i in range(20)])
    with _typha(etcd, tls, "s3cret") as (port, lines):
        client = SyncClient([f"127.0.0.1:{port}"], "node1", backoff_cap=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(30):
                await client.in_sync.wait()
            listed = set().union(*(model_keys(wep(i)) for i in range(20)))
            assert listed <= client.state.keys()
            # A delta through the gRPC watch (opened with the token, over TLS).
            async with _writer(etcd, tls) as writer:
                await apply_resources(writer, [wep(20)])
            with trio.fail_after(30):
                while not model_keys(wep(20)) <= client.state.keys():
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    starts = [r for r in _records(lines) if r.get("event") == "etcd datastore starting"]
    assert [s["api"] for s in starts] == ["grpc"], lines[-40:]
    assert starts[0]["endpoints"] == [etcd.client_url]


async def test_typha_with_a_wrong_password_reports_it_and_serves_nothing(
    secure_etcd: tuple[EtcdServer, EtcdTLS],
) -> None:
    etcd, tls = secure_etcd
    async with _writer(etcd, tls) as writer:
        await apply_resources(writer, [wep(0)])
    with _typha(etcd, tls, "wrong") as (port, lines):
        client = SyncClient([f"127.0.0.1:{port}"], "node1", backoff_cap=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            # Two seconds: Typha has listed 20 endpoints in well under that in the test above.
            with trio.move_on_after(2):
                await client.in_sync.wait()
            assert not client.in_sync.is_set()
            assert not model_keys(wep(0)) & client.state.keys()
            nursery.cancel_scope.cancel()
    text = "\n".join(lines)
    assert "authentication failed" in text, text[-3000:]
