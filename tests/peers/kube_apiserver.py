"""A real kube-apiserver (built by scripts/build-peers.sh) backed by a test etcd.

It runs with RBAC and client-cert auth, so tests exercise the same authn/authz paths as a cluster:
the admin user is in group system:masters; other identities can be minted with `issue_client_cert`.
No controller-manager runs, hence `--disable-admission-plugins=ServiceAccount`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.peers.etcd import EtcdServer
from tests.peers.pki import TestCA, write_key
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def find_kube_apiserver() -> str | None:
    """$TYPHA_KUBE_APISERVER_BIN, else the build-peers cache, else PATH."""
    return find_binary("TYPHA_KUBE_APISERVER_BIN", "kube-apiserver", "kube-apiserver")


# -- the server -----------------------------------------------------------------------------------


class KubeApiServer(PeerProcess):
    """kube-apiserver on a random loopback secure port, RBAC on, admin via client cert.

    Pass `etcd` to share an existing EtcdServer (give each apiserver its own `etcd_prefix`);
    otherwise a private etcd is started and stopped with this server.
    """

    name = "kube-apiserver"
    startup_timeout = 90.0
    stop_timeout = 15.0

    def __init__(
        self,
        *,
        binary: str | None = None,
        etcd: EtcdServer | None = None,
        etcd_prefix: str = "/registry",
        extra_args: Sequence[str] = (),
        startup_timeout: float | None = None,
        host: str = LOOPBACK,
    ):
        super().__init__(startup_timeout=startup_timeout)
        self.host = host  # where it listens and what its kubeconfig names
        found = binary or find_kube_apiserver()
        if not found:
            raise PeerError(
                "no kube-apiserver binary: run scripts/build-peers.sh kube-apiserver "
                "or set TYPHA_KUBE_APISERVER_BIN"
            )
        self.binary = found
        self._own_etcd = etcd is None
        self.etcd: EtcdServer | None = etcd
        self.etcd_prefix = etcd_prefix
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.ca: TestCA | None = None

    # -- paths and identities -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def pki_dir(self) -> Path:
        return self.tmpdir / "pki"

    @property
    def ca_path(self) -> str:
        return str(self.pki_dir / "ca.crt")

    @property
    def client_cert(self) -> str:
        """Admin client cert (CN=typha-test-admin, O=system:masters)."""
        return str(self.pki_dir / "admin.crt")

    @property
    def client_key(self) -> str:
        return str(self.pki_dir / "admin.key")

    @property
    def kubeconfig_path(self) -> str:
        return str(self.tmpdir / "kubeconfig")

    @property
    def sa_private_key_path(self) -> str:
        return str(self.pki_dir / "sa.key")

    @property
    def sa_public_key_path(self) -> str:
        return str(self.pki_dir / "sa.pub")

    def issue_client_cert(
        self, user: str, groups: Sequence[str] = (), stem: str | None = None
    ) -> tuple[str, str]:
        """Mint a client cert for `user` in `groups`; returns (cert_path, key_path).

        Use with `write_kubeconfig` to test RBAC as a less privileged identity.
        """
        if self.ca is None:
            raise PeerError("start the apiserver before issuing certs")
        cert, key = self.ca.issue(stem or f"user-{user}", user, orgs=groups, client=True)
        return str(cert), str(key)

    def write_kubeconfig(self, path: str | Path, cert: str, key: str, user: str = "user") -> str:
        """Write a kubeconfig for this server using the given client cert/key."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "typha-test",
                    "cluster": {"server": self.url, "certificate-authority": self.ca_path},
                }
            ],
            "users": [{"name": user, "user": {"client-certificate": cert, "client-key": key}}],
            "contexts": [
                {"name": "typha-test", "context": {"cluster": "typha-test", "user": user}}
            ],
            "current-context": "typha-test",
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)

    # -- process hooks --------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        self.ca = TestCA(self.pki_dir)
        self.ca.issue(
            "apiserver",
            "kube-apiserver",
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=sorted({LOOPBACK, self.host, "10.96.0.1"}),
            server=True,
            client=False,
        )
        self.ca.issue("admin", "typha-test-admin", orgs=["system:masters"], client=True)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_key(Path(self.sa_private_key_path), sa_key)
        Path(self.sa_public_key_path).write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.write_kubeconfig(self.kubeconfig_path, self.client_cert, self.client_key, "admin")

    def start(self) -> KubeApiServer:
        """Start (the private etcd first, if any) and wait for /readyz."""
        if self.etcd is None:
            self.etcd = EtcdServer()
        if self._own_etcd and not self.etcd.running:
            self.etcd.start()
        super().start()
        return self

    def _command(self) -> list[str]:
        assert self.etcd is not None
        pki = self.pki_dir
        return [
            self.binary,
            f"--etcd-servers={self.etcd.client_url}",
            f"--etcd-prefix={self.etcd_prefix}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_path}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.sa_public_key_path}",
            f"--service-account-signing-key-file={self.sa_private_key_path}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
            *self.extra_args,
        ]

    def _is_healthy(self) -> bool:
        with self.http_client(timeout=5.0) as c:
            r = c.get("/readyz")
        return r.status_code == 200

    def close(self) -> None:
        """Stop the apiserver, then its private etcd, and remove temp dirs."""
        try:
            super().close()
        finally:
            if self._own_etcd and self.etcd is not None:
                self.etcd.close()
                self.etcd = None

    # -- HTTP helpers ---------------------------------------------------------------------------

    def ssl_context(self, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
        """TLS context trusting the test CA and presenting `cert` (default: admin)."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        ctx.load_cert_chain(cert or self.client_cert, key or self.client_key)
        return ctx

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """Sync httpx client for this apiserver as the admin user (or pass `verify=`)."""
        kwargs.setdefault("verify", self.ssl_context())
        return loopback_client(base_url=self.url, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request as admin; the caller checks the status."""
        with self.http_client() as c:
            return c.request(method, path, **kwargs)

    def create_namespace(self, name: str) -> dict[str, Any]:
        """Create a namespace (409 = already there is fine) and return it."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        r = self.request("POST", "/api/v1/namespaces", json=body)
        if r.status_code == 409:
            r = self.request("GET", f"/api/v1/namespaces/{name}")
        if r.status_code not in (200, 201):
            raise PeerError(f"create namespace {name} -> {r.status_code}: {r.text}")
        result: dict[str, Any] = r.json()
        return result

    def apply_crds(self, directory: str | Path, timeout: float = 30.0) -> list[str]:
        """Create (or replace) every CRD in `directory`/*.yaml and wait until each is served.

        Returns the CRD names.  "Served" means Established=True and a LIST of the new resource
        answers 200, which is what a client about to watch it needs.
        """
        crds: list[dict[str, Any]] = []
        for path in sorted(Path(directory).glob("*.y*ml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
        if not crds:
            raise PeerError(f"no CustomResourceDefinition found in {directory}")
        with self.http_client() as c:
            for crd in crds:
                self._create_or_replace(c, crd)
            deadline = time.monotonic() + timeout
            for crd in crds:
                self._wait_served(c, crd, deadline)
        return [crd["metadata"]["name"] for crd in crds]

    @staticmethod
    def _create_or_replace(c: httpx.Client, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        r = c.post(CRD_PATH, json=crd)
        if r.status_code == 409:
            current = c.get(f"{CRD_PATH}/{name}")
            current.raise_for_status()
            body = {**crd, "metadata": {**crd["metadata"]}}
            body["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
            r = c.put(f"{CRD_PATH}/{name}", json=body)
        if r.status_code not in (200, 201):
            raise PeerError(f"apply CRD {name} -> {r.status_code}: {r.text}")

    def _wait_served(self, c: httpx.Client, crd: dict[str, Any], deadline: float) -> None:
        name = crd["metadata"]["name"]
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        list_path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
        while True:
            r = c.get(f"{CRD_PATH}/{name}")
            status = (r.json().get("status") or {}) if r.is_success else {}
            conditions = status.get("conditions") or []
            established = any(
                x.get("type") == "Established" and x.get("status") == "True" for x in conditions
            )
            if established and c.get(list_path).status_code == 200:
                return
            if time.monotonic() > deadline:
                raise PeerError(f"CRD {name} not served in time; conditions={conditions}")
            time.sleep(0.05)
