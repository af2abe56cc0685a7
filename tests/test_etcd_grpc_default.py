"""gRPC is the default EtcdAPI, and with it ``typha serve`` never loads httpx (the gateway's
HTTP/1.1 stack: httpx, httpcore, anyio, certifi, tens of ms of a cold start). Positive control
each time: with ``EtcdAPI=gateway`` the gateway client and httpx are loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.etcd import EtcdServer
from tests.peers.ports import free_ports
from tests.sync.test_etcd_datastore import model_keys, wep
from typha.app import etcd_settings
from typha.config import load_config
from typha.sync.etcd import EtcdDatastore, EtcdSettings
from typha.sync.etcd_grpc import GrpcEtcdClient
from typha.sync.etcd_writer import apply_resources

PY = sys.executable

# What `typha serve` imports and builds for an etcd datastore, short of connecting.
_SERVE_IMPORTS = """
import json, sys
import typha.cli, typha.logs, typha.preflight, typha.app
from typha.app import build_datastore, build_settings
from typha.config import load_config
cfg = load_config()
ds = build_datastore(build_settings(cfg).datastore)
client = ds.make_client()
print(json.dumps({"api": ds.api, "client": type(client).__name__,
                  "httpx": "httpx" in sys.modules,
                  "gateway_client": "typha.sync.etcd_client" in sys.modules}))
"""


def test_the_default_etcd_api_is_grpc() -> None:
    cfg = load_config(environ={})
    assert cfg.etcd_api == "grpc"
    assert etcd_settings(cfg).api == "grpc"
    assert EtcdSettings().api == "grpc"
    ds = EtcdDatastore()
    assert ds.api == "grpc" and isinstance(ds.make_client(), GrpcEtcdClient)
    # The gateway stays selectable.
    assert load_config(environ={"TYPHA_ETCDAPI": "gateway"}).etcd_api == "gateway"


@pytest.mark.parametrize("api", [None, "gateway"], ids=["default", "gateway"])
def test_serve_start_up_loads_httpx_only_for_the_gateway(api: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPHA_")}
    env.update({"TYPHA_DATASTORETYPE": "etcdv3", "TYPHA_DATASTOREINMEMORY": "false"})
    if api is not None:
        env["TYPHA_ETCDAPI"] = api
    out = subprocess.run(
        [PY, "-c", _SERVE_IMPORTS], env=env, capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out.splitlines()[-1])
    if api is None:
        assert seen == {
            "api": "grpc",
            "client": "GrpcEtcdClient",
            "httpx": False,
            "gateway_client": False,
        }
    else:  # positive control
        assert seen == {
            "api": "gateway",
            "client": "EtcdClient",
            "httpx": True,
            "gateway_client": True,
        }


def _imported_modules(output: str) -> set[str]:
    """Module names from ``python -X importtime``'s lines ("import time: self | cum | name")."""
    names = set()
    for line in output.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize("api", [None, "gateway"], ids=["default", "gateway"])
async def test_a_serving_typha_never_imports_httpx_with_grpc(
    etcd_server: EtcdServer, api: str | None
) -> None:
    """The whole life of ``typha serve`` (start-up, list, watch, a client in sync, shutdown),
    with ``-X importtime`` reporting every import, lazy ones included."""
    async with GrpcEtcdClient([etcd_server.client_url]) as writer:
        await apply_resources(writer, [wep(i) for i in range(5)])
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPHA_")}
    env.update(
        {
            "TYPHA_DATASTOREINMEMORY": "false",
            "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
            "TYPHA_SERVERPORT": str(port),
            "TYPHA_SERVERHOST": "127.0.0.1",
            "TYPHA_LOGFILEPATH": "none",
            "TYPHA_LOGSEVERITYSCREEN": "info",
            "TYPHA_LOGFORMAT": "json",
        }
    )
    if api is not None:
        env["TYPHA_ETCDAPI"] = api
    proc = subprocess.Popen(
        [PY, "-X", "importtime", "-m", "typha.cli", "serve"],
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
            assert set().union(*(model_keys(wep(i)) for i in range(5))) <= client.state.keys()
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        out, _ = await trio.to_thread.run_sync(proc.communicate, None, 15)
    modules = _imported_modules(out)
    assert "typha.sync.etcd" in modules, out[-2000:]  # importtime did report the lazy imports
    starts = [json.loads(ln) for ln in out.splitlines() if '"etcd datastore starting"' in ln]
    if api is None:
        assert [s["api"] for s in starts] == ["grpc"], out[-2000:]
        assert "httpx" not in modules and "typha.sync.etcd_client" not in modules
    else:  # positive control
        assert [s["api"] for s in starts] == ["gateway"], out[-2000:]
        assert "httpx" in modules and "typha.sync.etcd_client" in modules
