"""A real single-member etcd for tests, driven through its v3 JSON gateway.

Binary: $TYPHA_ETCD_BIN, else the etcd 3.6 built by scripts/build-peers.sh, else `etcd` on PATH
(Debian's 3.4).  Health and /metrics always come from a separate plain-HTTP metrics listener, so
readiness works the same with and without TLS client-cert auth.
"""

from __future__ import annotations

import base64
import functools
import re
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.peers.pki import TestCA
from tests.peers.ports import LOOPBACK, free_ports
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client


def find_etcd() -> str | None:
    """The etcd binary tests should use, or None if there is none."""
    return find_binary("TYPHA_ETCD_BIN", "etcd", "etcd")


@functools.cache
def _binary_info(binary: str) -> tuple[str, frozenset[str]]:
    """(version, supported --flags) of an etcd binary, probed once per binary."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    m = re.search(r"etcd Version:\s*(\S+)", out)
    version = m.group(1) if m else "unknown"
    help_out = subprocess.run(
        [binary, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    flags = frozenset(re.findall(r"--[a-z0-9-]+", help_out.stdout + help_out.stderr))
    return version, flags


def b64(data: str | bytes) -> str:
    """etcd's gateway wants keys and values base64-encoded."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class EtcdTLS:
    """Server TLS material; `client_cert_file`/`client_key_file` are what the helpers present.

    Two etcd gateway rules shape the certs: the gateway dials the gRPC server with the *server*
    cert as its client cert, so with client-cert auth that cert needs both serverAuth and
    clientAuth usages; and with client-cert auth *and* password auth enabled, etcd answers any
    HTTPS `/v3/*` request whose client cert has a CommonName with 400 "CommonName of client
    sending a request against gateway will be ignored and not used as expected"
    (embed/serve.go).  So a client cert meant for gateway + password auth has no CN.
    """

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_auth: bool = True
    ca: TestCA | None = field(default=None, compare=False, repr=False)
    """The signing CA when made by `generate`, to mint more client certs in tests."""

    @classmethod
    def generate(
        cls, directory: str | Path, *, client_cert_auth: bool = True, client_cn: str = ""
    ) -> EtcdTLS:
        """Make a CA, a server cert for 127.0.0.1/localhost and a client cert.

        The client cert has subject O=typha and, unless `client_cn` is given, no CommonName
        (see the class docstring for why).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ca = TestCA(directory, cn="typha-etcd-ca")
        cert, key = ca.issue(
            "etcd-server", "etcd", dns=["localhost"], ips=[LOOPBACK], server=True, client=True
        )
        client_cert, client_key = ca.issue("etcd-client", client_cn, orgs=["typha"], client=True)
        return cls(
            cert_file=str(cert),
            key_file=str(key),
            ca_file=str(ca.cert_path),
            client_cert_file=str(client_cert),
            client_key_file=str(client_key),
            client_cert_auth=client_cert_auth,
            ca=ca,
        )

    def client_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx


class EtcdServer(PeerProcess):
    """Single-member etcd on random loopback ports with a throw-away data dir."""

    name = "etcd"
    startup_timeout = 30.0

    def __init__(
        self,
        *,
        binary: str | None = None,
        tmpfs: bool = False,
        no_fsync: bool = True,
        tls: EtcdTLS | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float | None = None,
    ):
        """`tmpfs` puts the data dir on /dev/shm (load runs); `no_fsync` uses
        --unsafe-no-fsync where the binary has it (etcd >= 3.5) to keep tests fast."""
        super().__init__(startup_timeout=startup_timeout, tmp_root="/dev/shm" if tmpfs else None)
        found = binary or find_etcd()
        if not found:
            raise PeerError(
                "no etcd binary: set TYPHA_ETCD_BIN, run scripts/build-peers.sh etcd, "
                "or scripts/setup-system.sh (Debian etcd-server)"
            )
        self.binary = found
        self.no_fsync = no_fsync
        self.tls = tls
        self.extra_args = list(extra_args)
        self.client_port, self.peer_port, self.metrics_port = free_ports(3)
        self._auth: tuple[str, str] | None = None

    # -- info -----------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Server version string, e.g. "3.6.16"."""
        return _binary_info(self.binary)[0]

    @property
    def supports_no_fsync(self) -> bool:
        return "--unsafe-no-fsync" in _binary_info(self.binary)[1]

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """host:port of the client listener."""
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"

    @property
    def data_dir(self) -> str:
        return str(self.tmpdir / "data")

    # -- process hooks --------------------------------------------------------------------------

    def _command(self) -> list[str]:
        peer_url = f"http://{LOOPBACK}:{self.peer_port}"
        cmd = [
            self.binary,
            "--name=typha-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=typha-test={peer_url}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls={self.metrics_url}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        if self.no_fsync and self.supports_no_fsync:
            cmd.append("--unsafe-no-fsync")
        if self.tls:
            cmd += [
                f"--cert-file={self.tls.cert_file}",
                f"--key-file={self.tls.key_file}",
                f"--trusted-ca-file={self.tls.ca_file}",
                f"--client-cert-auth={'true' if self.tls.client_cert_auth else 'false'}",
            ]
        return cmd + self.extra_args

    def _is_healthy(self) -> bool:
        with loopback_client(timeout=2.0) as c:
            r = c.get(f"{self.metrics_url}/health")
        return r.status_code == 200 and r.json().get("health") == "true"

    # -- gateway helpers ------------------------------------------------------------------------

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the client URL, with TLS client cert when configured."""
        if self.tls:
            kwargs.setdefault("verify", self.tls.client_ssl_context())
        return loopback_client(base_url=self.client_url, **kwargs)

    def auth_headers(self) -> dict[str, str]:
        """{"Authorization": token} for the user given to enable_auth, or {} without auth."""
        if self._auth is None:
            return {}
        return {"Authorization": self.auth_token(*self._auth)}

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to a gateway endpoint (e.g. "/v3/kv/range") and return the JSON reply."""
        with self.http_client() as c:
            r = c.post(path, json=body or {}, headers=self.auth_headers())
        if r.status_code != 200:
            raise PeerError(f"etcd {path} -> {r.status_code}: {r.text}")
        result: dict[str, Any] = r.json()
        return result

    def auth_token(self, user: str, password: str) -> str:
        """Authenticate and return a token for the Authorization header."""
        with self.http_client() as c:
            r = c.post("/v3/auth/authenticate", json={"name": user, "password": password})
        if r.status_code != 200:
            raise PeerError(f"etcd authenticate {user} -> {r.status_code}: {r.text}")
        token: str = r.json()["token"]
        return token

    def put(self, key: str | bytes, value: str | bytes) -> int:
        """Put a key; returns the new store revision."""
        reply = self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
        return int(reply["header"]["revision"])

    def get(self, key: str | bytes) -> bytes | None:
        """Value of a key, or None if absent."""
        reply = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = reply.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def delete(self, key: str | bytes) -> int:
        """Delete a key; returns the new store revision."""
        reply = self.call("/v3/kv/deleterange", {"key": b64(key)})
        return int(reply["header"]["revision"])

    def revision(self) -> int:
        """Current store revision."""
        reply = self.call("/v3/kv/range", {"key": b64(b"\0"), "count_only": True})
        return int(reply["header"]["revision"])

    def compact(self, revision: int | None = None, *, physical: bool = True) -> int:
        """Compact history up to `revision` (default: current); returns the revision used."""
        rev = self.revision() if revision is None else revision
        self.call("/v3/kv/compaction", {"revision": str(rev), "physical": physical})
        return rev

    def enable_auth(self, user: str = "root", password: str = "typha-test") -> None:
        """Turn on username/password auth with `user` holding the root role.

        etcd refuses auth/enable unless a `root` user exists, so a non-root `user` gets a root
        user with the same password next to it.  Later helper calls authenticate as `user`.
        """
        self.call("/v3/auth/role/add", {"name": "root"})
        for name in dict.fromkeys(["root", user]):
            self.call("/v3/auth/user/add", {"name": name, "password": password})
            self.call("/v3/auth/user/grant", {"user": name, "role": "root"})
        self.call("/v3/auth/enable", {})
        self._auth = (user, password)

    def add_user(
        self, user: str, password: str, *, read_prefix: str | None = None, role: str | None = None
    ) -> None:
        """Add a user (auth-enabled servers); with `read_prefix`, give it read-only access there.

        Handy to prove that a client gets PermissionDenied outside its prefix.
        """
        self.call("/v3/auth/user/add", {"name": user, "password": password})
        if read_prefix is not None:
            role = role or f"{user}-read"
            self.call("/v3/auth/role/add", {"name": role})
            prefix = read_prefix.encode()
            range_end = prefix[:-1] + bytes([prefix[-1] + 1])
            perm = {"permType": "READ", "key": b64(prefix), "range_end": b64(range_end)}
            self.call("/v3/auth/role/grant", {"name": role, "perm": perm})
            self.call("/v3/auth/user/grant", {"user": user, "role": role})

    def metrics(self) -> str:
        """Prometheus text from etcd's /metrics."""
        with loopback_client() as c:
            r = c.get(f"{self.metrics_url}/metrics")
        r.raise_for_status()
        return r.text
