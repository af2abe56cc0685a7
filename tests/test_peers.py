"""Each real third-party peer starts, answers and cleans up (the harness other tests use)."""

from __future__ import annotations

import base64
import os
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.peers.etcd import EtcdServer, EtcdTLS, b64, find_etcd
from tests.peers.kube_apiserver import KubeApiServer
from tests.peers.pki import TestCA
from tests.peers.plugin import EtcdFactory, PrometheusFactory, require_binary
from tests.peers.ports import LOOPBACK, free_port, port_is_open
from tests.peers.process import loopback_client
from tests.peers.toxiproxy import ToxiproxyServer

# -- etcd -----------------------------------------------------------------------------------------


def test_etcd_put_get_via_gateway(etcd_server: EtcdServer) -> None:
    rev = etcd_server.put("/calico/v1/config/foo", "bar")
    assert etcd_server.get("/calico/v1/config/foo") == b"bar"
    assert etcd_server.get("/calico/v1/config/missing") is None
    assert etcd_server.revision() == rev
    assert etcd_server.delete("/calico/v1/config/foo") == rev + 1
    assert etcd_server.get("/calico/v1/config/foo") is None
    assert "etcd_server_has_leader 1" in etcd_server.metrics()


def test_etcd_compaction_makes_old_revisions_unreadable(etcd_server: EtcdServer) -> None:
    first = etcd_server.put("k", "v1")
    etcd_server.put("k", "v2")
    etcd_server.compact()
    with etcd_server.http_client() as c:
        r = c.post("/v3/kv/range", json={"key": b64("k"), "revision": str(first)})
    assert r.status_code != 200
    assert "compacted" in r.text


def test_etcd_kill_and_restart_keeps_data(etcd_server: EtcdServer) -> None:
    etcd_server.put("survives", "yes")
    port = etcd_server.client_port
    etcd_server.kill()
    assert not etcd_server.running
    assert not port_is_open(LOOPBACK, port)
    etcd_server.start()
    assert etcd_server.client_port == port
    assert etcd_server.get("survives") == b"yes"


def test_etcd_tls_client_cert_and_password_auth(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    tls = EtcdTLS.generate(tmp_path)
    etcd = etcd_factory(tls=tls)
    assert etcd.client_url.startswith("https://")
    etcd.put("/calico/tls", "ok")
    assert etcd.get("/calico/tls") == b"ok"

    # A client that trusts the CA but presents no cert is refused by client-cert auth.
    no_cert = ssl.create_default_context(cafile=tls.ca_file)
    with (
        loopback_client(base_url=etcd.client_url, verify=no_cert) as c,
        pytest.raises(httpx.TransportError),
    ):
        c.post("/v3/kv/range", json={"key": b64("/calico/tls")})

    # A cert from another CA is refused too.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = TestCA(other_dir)
    bad_cert, bad_key = other.issue("intruder", "typha")
    wrong_ca = ssl.create_default_context(cafile=tls.ca_file)
    wrong_ca.load_cert_chain(bad_cert, bad_key)
    with (
        loopback_client(base_url=etcd.client_url, verify=wrong_ca) as c,
        pytest.raises(httpx.TransportError),
    ):
        c.post("/v3/kv/range", json={"key": b64("/calico/tls")})

    # Username/password on top: no token -> refused, token -> allowed, read-only user -> denied.
    etcd.enable_auth("typha", "s3cret")
    with etcd.http_client() as c:
        anonymous = c.post("/v3/kv/range", json={"key": b64("/calico/tls")})
        assert anonymous.status_code != 200
        bad = c.post("/v3/auth/authenticate", json={"name": "typha", "password": "wrong"})
        assert bad.status_code != 200
    assert etcd.get("/calico/tls") == b"ok"  # helpers authenticate as "typha"

    # etcd rule worth knowing for our client: with client-cert + password auth, a client cert
    # that carries a CommonName is refused by the gateway (400), even with a valid token.
    assert tls.ca is not None
    cn_cert, cn_key = tls.ca.issue("with-cn", "typha-with-cn", client=True)
    with_cn = ssl.create_default_context(cafile=tls.ca_file)
    with_cn.load_cert_chain(cn_cert, cn_key)
    with loopback_client(base_url=etcd.client_url, verify=with_cn) as c:
        r = c.post("/v3/kv/range", json={"key": b64("/calico/tls")}, headers=etcd.auth_headers())
    assert r.status_code == 400
    assert "CommonName" in r.text

    etcd.add_user("reader", "pw", read_prefix="/calico/")
    token = etcd.auth_token("reader", "pw")
    with etcd.http_client(headers={"Authorization": token}) as c:
        ok = c.post("/v3/kv/range", json={"key": b64("/calico/tls")})
        assert ok.status_code == 200
        assert base64.b64decode(ok.json()["kvs"][0]["value"]) == b"ok"
        denied = c.post("/v3/kv/put", json={"key": b64("/calico/x"), "value": b64("x")})
        assert denied.status_code == 403
        assert "permission denied" in denied.text


def test_etcd_tmpfs_data_dir(etcd_factory: EtcdFactory) -> None:
    etcd = etcd_factory(tmpfs=True)
    assert etcd.data_dir.startswith("/dev/shm/")
    etcd.put("a", "b")
    assert etcd.get("a") == b"b"


def test_etcd_close_removes_everything() -> None:
    binary = require_binary(find_etcd, "etcd", "scripts/build-peers.sh etcd")
    with EtcdServer(binary=binary) as etcd:
        tmpdir, pid = etcd.tmpdir, etcd.pid
        assert tmpdir.is_dir()
    assert not tmpdir.exists()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- kube-apiserver -------------------------------------------------------------------------------

CALICO = "/apis/crd.projectcalico.org/v1"


@pytest.mark.k8s
def test_kube_apiserver_serves_namespaces_and_calico_crds(kube_apiserver: KubeApiServer) -> None:
    ns = f"typha-{uuid.uuid4().hex[:8]}"
    created = kube_apiserver.create_namespace(ns)
    assert created["metadata"]["name"] == ns

    pool_name = f"pool-{uuid.uuid4().hex[:8]}"
    pool = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": pool_name},
        "spec": {"cidr": "192.168.0.0/16", "ipipMode": "Always", "natOutgoing": True},
    }
    r = kube_apiserver.request("POST", f"{CALICO}/ippools", json=pool)
    assert r.status_code == 201, r.text
    got = kube_apiserver.request("GET", f"{CALICO}/ippools/{pool_name}")
    assert got.status_code == 200
    assert got.json()["spec"] == pool["spec"]

    policy = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default.allow-all", "namespace": ns},
        "spec": {"tier": "default", "selector": "all()", "types": ["Ingress"]},
    }
    r = kube_apiserver.request("POST", f"{CALICO}/namespaces/{ns}/networkpolicies", json=policy)
    assert r.status_code == 201, r.text
    listed = kube_apiserver.request("GET", f"{CALICO}/namespaces/{ns}/networkpolicies").json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["default.allow-all"]


@pytest.mark.k8s
def test_kube_apiserver_all_crds_established(kube_apiserver: KubeApiServer) -> None:
    crd_dir = Path(__file__).resolve().parents[1] / "config" / "crds"
    names = kube_apiserver.apply_crds(crd_dir)  # idempotent: re-applies over the fixture's
    assert len(names) == 18
    discovery = kube_apiserver.request("GET", CALICO).json()
    served = {res["name"] for res in discovery["resources"] if "/" not in res["name"]}
    assert served == {name.split(".", 1)[0] for name in names}


@pytest.mark.k8s
def test_kube_apiserver_server_side_dry_run_clusterrole(kube_apiserver: KubeApiServer) -> None:
    name = f"typha-dry-run-{uuid.uuid4().hex[:8]}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": ["crd.projectcalico.org"],
                "resources": ["ippools", "networkpolicies"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    r = kube_apiserver.request("POST", path, params={"dryRun": "All"}, json=role)
    assert r.status_code == 201, r.text
    assert r.json()["rules"] == role["rules"]
    assert kube_apiserver.request("GET", f"{path}/{name}").status_code == 404  # not persisted

    bad = {**role, "rules": [{"apiGroups": [""], "resources": ["pods"]}]}  # no verbs
    r = kube_apiserver.request("POST", path, params={"dryRun": "All"}, json=bad)
    assert r.status_code == 422, r.text


@pytest.mark.k8s
def test_kube_apiserver_rbac_and_kubeconfig(kube_apiserver: KubeApiServer, tmp_path: Path) -> None:
    version = kube_apiserver.request("GET", "/version").json()
    assert version["gitVersion"].startswith("v1.")

    config = yaml.safe_load(Path(kube_apiserver.kubeconfig_path).read_text())
    assert config["clusters"][0]["cluster"]["server"] == kube_apiserver.url
    assert config["users"][0]["user"]["client-certificate"] == kube_apiserver.client_cert

    # RBAC is really on: an authenticated user without bindings is forbidden.
    cert, key = kube_apiserver.issue_client_cert("nobody", groups=["typha-test-nobody"])
    ctx = kube_apiserver.ssl_context(cert, key)
    with kube_apiserver.http_client(verify=ctx) as c:
        r = c.get(f"{CALICO}/ippools")
    assert r.status_code == 403
    kube_apiserver.write_kubeconfig(tmp_path / "nobody.kubeconfig", cert, key, "nobody")


# -- toxiproxy ------------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A tiny threaded TCP echo server on loopback."""
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LOOPBACK, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _round_trip(host: str, port: int, payload: bytes = b"ping") -> float:
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            assert chunk, "connection closed early"
            got += chunk
    assert got == payload
    return time.monotonic() - start


@pytest.mark.toxiproxy
def test_toxiproxy_latency_toxic(
    toxiproxy_server: ToxiproxyServer, echo_server: tuple[str, int]
) -> None:
    host, port = echo_server
    proxy = toxiproxy_server.create_proxy("echo", f"{host}:{port}")
    assert proxy.port != port
    assert _round_trip(proxy.host, proxy.port) < 0.2

    toxiproxy_server.add_toxic("echo", "latency", latency=300)
    assert _round_trip(proxy.host, proxy.port) >= 0.3

    toxiproxy_server.remove_toxic("echo", "latency_downstream")
    assert _round_trip(proxy.host, proxy.port) < 0.2

    with toxiproxy_server.client.down("echo"):
        assert not port_is_open(proxy.host, proxy.port)
    toxiproxy_server.wait_listening(proxy)
    assert _round_trip(proxy.host, proxy.port) < 0.2


@pytest.mark.toxiproxy
def test_toxiproxy_python_package_drives_v2_server(
    toxiproxy_server: ToxiproxyServer, echo_server: tuple[str, int]
) -> None:
    """Backs the docs/peers.md note: the 2019 client works against v2 (with caveats)."""
    toxiproxy = pytest.importorskip("toxiproxy")
    host, port = echo_server
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer(LOOPBACK, toxiproxy_server.port)  # class-level global
    try:
        assert server.running()
        proxy = server.create(upstream=f"{host}:{port}", name="legacy")
        listen_host, listen_port = proxy.listen.rsplit(":", 1)
        proxy.add_toxic(type="latency", attributes={"latency": 200})
        assert _round_trip(listen_host, int(listen_port)) >= 0.2
        assert server.reset()
        assert toxiproxy_server.client.toxics("legacy") == []
        proxy.destroy()
    finally:
        server.update_api_consumer("127.0.0.1", 8474)


# -- prometheus -----------------------------------------------------------------------------------


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[int, Gauge, Counter]]:
    """A prometheus_client HTTP server with a private registry."""
    registry = CollectorRegistry()
    gauge = Gauge("typha_peer_test_gauge", "test gauge", registry=registry)
    counter = Counter("typha_peer_test_events", "test counter", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    try:
        yield port, gauge, counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_prometheus_scrapes_loopback_target(
    prometheus_factory: PrometheusFactory, metrics_endpoint: tuple[int, Gauge, Counter]
) -> None:
    port, gauge, counter = metrics_endpoint
    gauge.set(42.5)
    counter.inc(7)
    prom = prometheus_factory([f"{LOOPBACK}:{port}"])
    assert prom.wait_for_value("typha_peer_test_gauge") == 42.5
    assert prom.query_value("typha_peer_test_events_total") == 7
    assert prom.query_value('up{job="typha-test"}') == 1

    gauge.set(1)
    deadline = time.monotonic() + 10
    while prom.query_value("typha_peer_test_gauge") != 1:
        assert time.monotonic() < deadline, "new value never scraped"
        time.sleep(0.2)


def test_a_forked_child_terminated_with_sigterm_leaves_the_peers_alone(
    etcd_factory: EtcdFactory,
) -> None:
    """pyroute2's NetNS helper is a fork of the test process, stopped with SIGTERM: it inherits
    the SIGTERM clean-up handler and must not stop the parent's peers (it once removed the
    session kube-apiserver's temp dir mid-run)."""
    import signal

    server = etcd_factory()
    tmpdir = Path(server.tmpdir)
    assert tmpdir.is_dir() and port_is_open(LOOPBACK, server.client_port)
    pid = os.fork()
    if pid == 0:  # the child: what pyroute2's helper gets from its parent
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(0)  # not reached: the handler re-raises SIGTERM with the default action
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert tmpdir.is_dir() and port_is_open(LOOPBACK, server.client_port)
    # Control: the peer does stop when its owner stops it.
    server.close()
    assert not port_is_open(LOOPBACK, server.client_port)
