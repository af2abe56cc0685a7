"""EtcdAPI=grpc end to end: ``typha serve`` as an operator starts it, on a real etcd, with a
client that gets in sync and then receives deltas that came through etcd's gRPC watch; and the
TLS/auth settings taken as with the gateway (with TLS and auth end to end:
tests/test_etcd_grpc_tls_auth_e2e.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.etcd import EtcdServer, EtcdTLS
from tests.peers.ports import free_ports
from tests.sync.test_etcd_datastore import model_keys, wep
from typha.app import etcd_settings
from typha.config import load_config
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_grpc import GrpcEtcdClient
from typha.sync.etcd_writer import apply_resources, delete_resources

PY = sys.executable


async def _wait(pred, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    try:
        with trio.fail_after(timeout):
            while not pred():
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_typha_serves_a_client_through_the_grpc_watch(etcd_server: EtcdServer) -> None:
    async with EtcdClient([etcd_server.client_url]) as writer:
        await apply_resources(writer, [wep(i) for i in range(50)])
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "false",
        "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
        "TYPHA_ETCDAPI": "grpc",
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
    try:
        client = SyncClient([f"127.0.0.1:{port}"], "node1", backoff_cap=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(30):
                await client.in_sync.wait()
            listed = set().union(*(model_keys(wep(i)) for i in range(50)))
            assert listed <= client.state.keys()
            # Deltas through the watch: new, changed and deleted endpoints.
            async with EtcdClient([etcd_server.client_url]) as writer:
                await apply_resources(writer, [wep(i) for i in range(50, 60)])
                await apply_resources(writer, [wep(1, label="changed")])
                await delete_resources(writer, [wep(i) for i in range(5, 10)])
            added = set().union(*(model_keys(wep(i)) for i in range(50, 60)))
            gone = set().union(*(model_keys(wep(i)) for i in range(5, 10)))
            await _wait(lambda: added <= client.state.keys(), "the added endpoints")
            await _wait(lambda: not gone & client.state.keys(), "the deleted endpoints gone")
            (changed_key,) = model_keys(wep(1))
            await _wait(
                lambda: "changed" in json.dumps(client.state.get(changed_key)), "the change"
            )
            assert client.stats.snapshots == 1 and client.stats.disconnects == 0
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        out, _ = await trio.to_thread.run_sync(proc.communicate, None, 15)
    # The process really used gRPC (its start-up line names the API).
    starts = [json.loads(ln) for ln in out.splitlines() if '"etcd datastore starting"' in ln]
    assert [s["api"] for s in starts] == ["grpc"], out[-3000:]


@pytest.mark.parametrize(
    "settings",
    [
        {"TYPHA_ETCDCAFILE": "ca"},
        {"TYPHA_ETCDCERTFILE": "cert", "TYPHA_ETCDKEYFILE": "key"},
        {"TYPHA_ETCDUSERNAME": "typha", "TYPHA_ETCDPASSWORD": "pw"},
        {"TYPHA_ETCDSCHEME": "https"},
        {"TYPHA_ETCDENDPOINTS": "http://127.0.0.1:2379,https://127.0.0.1:2380"},
    ],
    ids=["ca", "client-cert", "username", "https-scheme", "https-endpoint"],
)
def test_grpc_takes_the_same_tls_and_auth_settings_as_the_gateway(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    """TLS and auth settings with EtcdAPI=grpc (the default): accepted by the configuration
    (they were refused at start-up before the transport had TLS and auth), and the client made
    from them is the gRPC one with the same endpoints and credentials as the gateway's.
    Reaching etcd with them: tests/sync/test_etcd_grpc_tls_auth.py and
    tests/test_etcd_grpc_tls_auth_e2e.py."""
    tls = EtcdTLS.generate(tmp_path)
    files = {"ca": tls.ca_file, "cert": tls.client_cert_file, "key": tls.client_key_file}
    env = {k: files.get(v, v) for k, v in settings.items()}
    gateway_cfg = load_config(environ={**env, "TYPHA_ETCDAPI": "gateway"})
    gateway = EtcdDatastore.from_settings(etcd_settings(gateway_cfg))
    cfg = load_config(environ=env)  # the default API
    assert cfg.etcd_api == "grpc"
    ds = EtcdDatastore.from_settings(etcd_settings(cfg))
    assert ds.access == gateway.access
    client, gw_client = ds.make_client(), gateway.make_client()
    assert isinstance(client, GrpcEtcdClient) and isinstance(gw_client, EtcdClient)
    assert client.endpoints == gw_client.endpoints
    assert client._username == gw_client._username
    assert client._tls == [e.startswith("https://") for e in gw_client.endpoints]
    assert (client._ssl is not None) == any(client._tls)
    trio.run(gw_client.aclose)
    trio.run(client.aclose)


def test_an_unknown_etcd_api_is_refused() -> None:
    with pytest.raises(ValueError, match="EtcdAPI must be one of"):
        EtcdDatastore(["http://127.0.0.1:2379"], api="grpcc")
    # Positive control: both known values.
    for api in ("gateway", "grpc"):
        assert EtcdDatastore(["127.0.0.1:2379"], api=api).api == api
