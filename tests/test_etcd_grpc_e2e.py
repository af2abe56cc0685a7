"""EtcdAPI=grpc end to end: ``typha serve`` as an operator starts it, on a real etcd, with a
client that gets in sync and then receives deltas that came through etcd's gRPC watch; and the
start-up refusal of TLS/auth with this transport (one line, exit code 2) next to the same
settings accepted with the gateway."""

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
from typha.config import ConfigError, load_config
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import EtcdAccess, EtcdClient
from typha.sync.etcd_grpc import REFUSAL, GrpcEtcdClient
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


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (port,) = free_ports(1)
    base = {
        "TYPHA_DATASTOREINMEMORY": "false",
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_LOGFILEPATH": "none",
    }
    return subprocess.run(
        [PY, "-m", "typha.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **base, **env},
    )


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
def test_grpc_with_tls_or_auth_is_refused_at_start_up(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    tls = EtcdTLS.generate(tmp_path)
    files = {"ca": tls.ca_file, "cert": tls.client_cert_file, "key": tls.client_key_file}
    env = {k: files.get(v, v) for k, v in settings.items()}
    out = _serve({**env, "TYPHA_ETCDAPI": "grpc"})
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSAL in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    # Positive control: the same settings are a valid configuration with the gateway.
    cfg = load_config(environ=env)
    assert cfg.etcd_api == "gateway"
    with pytest.raises(ConfigError, match=REFUSAL):
        load_config(environ={**env, "TYPHA_ETCDAPI": "grpc"})


def test_grpc_refusal_in_the_datastore_and_client() -> None:
    """Built in code rather than from the configuration, the refusal holds too."""
    with pytest.raises(ValueError, match=REFUSAL):
        EtcdDatastore(["http://127.0.0.1:2379"], api="grpc", access=EtcdAccess(username="u"))
    with pytest.raises(ValueError, match=REFUSAL):
        EtcdDatastore(["http://127.0.0.1:2379"], api="grpc", access=EtcdAccess(ca_file="ca"))
    with pytest.raises(ValueError, match=REFUSAL):
        EtcdDatastore(["https://127.0.0.1:2379"], api="grpc")
    with pytest.raises(ValueError, match=REFUSAL):
        GrpcEtcdClient(["https://127.0.0.1:2379"])
    with pytest.raises(ValueError, match="EtcdAPI must be one of"):
        EtcdDatastore(["http://127.0.0.1:2379"], api="grpcc")
    # Positive controls: plain HTTP with gRPC, and TLS with the gateway.
    assert isinstance(EtcdDatastore(["127.0.0.1:2379"], api="grpc").make_client(), GrpcEtcdClient)
    ds = EtcdDatastore(["https://127.0.0.1:2379"], access=EtcdAccess(username="u"))
    assert ds.api == "gateway"
