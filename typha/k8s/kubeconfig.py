"""Kubeconfig and in-cluster configuration for the Kubernetes client (docs/kubernetes.md).

:class:`KubeConfig` loads, in this order: an explicit kubeconfig path, ``$KUBECONFIG`` (a list
of files, merged like kubectl: the first file to define a name wins), the in-cluster service
account (``KUBERNETES_SERVICE_HOST``/``PORT`` + ``/var/run/secrets/kubernetes.io/
serviceaccount``), then ``~/.kube/config``. Supports clusters/users/contexts,
``client-certificate(-data)``, ``client-key(-data)``, ``token``, ``tokenFile``,
``username``/``password``, ``certificate-authority(-data)``, ``insecure-skip-tls-verify``,
``proxy-url``. Exec and auth-provider plugins are refused with a clear error.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_KUBECONFIG = "~/.kube/config"
# A bound service-account token is rotated by the kubelet; client-go re-reads it every minute.
TOKEN_REREAD_SECS = 60.0


class KubeConfigError(Exception):
    """The kubeconfig / in-cluster configuration is missing or unusable."""


# --- configuration ----------------------------------------------------------------------------


def _b64(data: str) -> bytes:
    return base64.b64decode(data.encode() if isinstance(data, str) else data)


def _resolve(path: str | None, base: Path | None) -> str | None:
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


@dataclass
class KubeConfig:
    """Where the apiserver is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False
    proxy_url: str | None = None
    namespace: str = "default"
    source: str = ""

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        environ: Mapping[str, str] | None = None,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
    ) -> KubeConfig:
        """The configuration a component started here would use.

        Order: explicit ``path``; ``$KUBECONFIG`` (``os.pathsep``-separated, merged); in-cluster
        (``KUBERNETES_SERVICE_HOST`` set); ``~/.kube/config``.
        """
        env = os.environ if environ is None else environ
        if path:
            return cls.from_kubeconfig([path], context=context)
        if env.get("KUBECONFIG"):
            files = [p for p in env["KUBECONFIG"].split(os.pathsep) if p]
            return cls.from_kubeconfig(files, context=context)
        if env.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(environ=env, service_account_dir=service_account_dir)
        default = Path(DEFAULT_KUBECONFIG).expanduser()
        if default.exists():
            return cls.from_kubeconfig([default], context=context)
        raise KubeConfigError(
            "no Kubernetes configuration: set KUBECONFIG, run in a pod, or create ~/.kube/config"
        )

    @classmethod
    def in_cluster(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
    ) -> KubeConfig:
        """The pod's service account: ``KUBERNETES_SERVICE_HOST``/``PORT``, token and CA."""
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "443") or "443"
        if not host:
            raise KubeConfigError("in-cluster config: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 service IP
        sa = Path(service_account_dir)
        token_file = sa / "token"
        if not token_file.exists():
            raise KubeConfigError(f"in-cluster config: {token_file} does not exist")
        ca = sa / "ca.crt"
        ns_file = sa / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
        return cls(
            server=f"https://{host}:{port}",
            ca_file=str(ca) if ca.exists() else None,
            token_file=str(token_file),
            namespace=namespace or "default",
            source="in-cluster",
        )

    @classmethod
    def from_kubeconfig(
        cls, files: Sequence[str | os.PathLike[str]], *, context: str | None = None
    ) -> KubeConfig:
        """Parse (and merge) kubeconfig files; use ``context`` or the current context."""
        clusters: dict[str, tuple[dict[str, Any], Path]] = {}
        users: dict[str, tuple[dict[str, Any], Path]] = {}
        contexts: dict[str, dict[str, Any]] = {}
        current: str | None = None
        read_any = False
        for f in files:
            p = Path(f).expanduser()
            if not p.exists():
                continue
            try:
                doc = yaml.safe_load(p.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise KubeConfigError(f"kubeconfig {p}: {exc}") from None
            if not isinstance(doc, dict):
                raise KubeConfigError(f"kubeconfig {p}: not a mapping")
            read_any = True
            base = p.resolve().parent
            for entry in doc.get("clusters") or []:
                clusters.setdefault(entry.get("name", ""), (entry.get("cluster") or {}, base))
            for entry in doc.get("users") or []:
                users.setdefault(entry.get("name", ""), (entry.get("user") or {}, base))
            for entry in doc.get("contexts") or []:
                contexts.setdefault(entry.get("name", ""), entry.get("context") or {})
            if current is None and doc.get("current-context"):
                current = str(doc["current-context"])
        shown = os.pathsep.join(str(f) for f in files)
        if not read_any:
            raise KubeConfigError(f"kubeconfig {shown}: no such file")
        name = context or current
        if not name or name not in contexts:
            raise KubeConfigError(f"kubeconfig {shown}: context {name!r} not found")
        ctx = contexts[name]
        if ctx.get("cluster") not in clusters:
            raise KubeConfigError(f"kubeconfig {shown}: cluster {ctx.get('cluster')!r} not found")
        cluster, cbase = clusters[ctx["cluster"]]
        user, ubase = users.get(ctx.get("user", ""), ({}, cbase))
        if user.get("exec") or user.get("auth-provider"):
            raise KubeConfigError(
                f"kubeconfig {shown}: user {ctx.get('user')!r} needs an exec/auth-provider "
                "credential plugin, which typha-py does not run; use a token or client cert"
            )
        server = str(cluster.get("server") or "")
        if not server:
            raise KubeConfigError(f"kubeconfig {shown}: cluster {ctx['cluster']!r} has no server")
        return cls(
            server=server.rstrip("/"),
            ca_file=_resolve(cluster.get("certificate-authority"), cbase),
            ca_data=_b64(cluster["certificate-authority-data"])
            if cluster.get("certificate-authority-data")
            else None,
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
            proxy_url=cluster.get("proxy-url") or None,
            cert_file=_resolve(user.get("client-certificate"), ubase),
            key_file=_resolve(user.get("client-key"), ubase),
            cert_data=_b64(user["client-certificate-data"])
            if user.get("client-certificate-data")
            else None,
            key_data=_b64(user["client-key-data"]) if user.get("client-key-data") else None,
            token=user.get("token") or None,
            token_file=_resolve(user.get("tokenFile"), ubase),
            username=user.get("username") or None,
            password=user.get("password") or None,
            namespace=str(ctx.get("namespace") or "default"),
            source=f"kubeconfig:{shown}#{name}",
        )

    # -- httpx plumbing ----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for httpx's ``verify=`` (False only with insecure-skip-tls-verify and
        no client certificate)."""
        if self.server.startswith("http://"):
            return True
        if self.insecure_skip_tls_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_file or self.ca_data:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.ca_data:
                ctx.load_verify_locations(cadata=self.ca_data.decode())
        else:
            ctx = ssl.create_default_context()
        if self.cert_file or self.cert_data:
            with self._cert_files() as (cert, key):
                ctx.load_cert_chain(cert, key)
        return ctx

    @contextlib.contextmanager
    def _cert_files(self) -> Generator[tuple[str, str | None], None, None]:
        """Client cert/key as files (``ssl`` only loads from files); inline data is written
        to a private temporary directory that is removed right after loading."""
        if self.cert_data is None and self.key_data is None:
            assert self.cert_file is not None
            yield self.cert_file, self.key_file
            return
        with tempfile.TemporaryDirectory(prefix="typha-kube-") as tmp:
            cert, key = self.cert_file, self.key_file
            if self.cert_data is not None:
                cert = os.path.join(tmp, "client.crt")
                _write_private(cert, self.cert_data)
            if self.key_data is not None:
                key = os.path.join(tmp, "client.key")
                _write_private(key, self.key_data)
            assert cert is not None
            yield cert, key

    def auth(self) -> httpx.Auth | None:
        if self.token or self.token_file:
            return BearerTokenAuth(self.token, self.token_file)
        if self.username:
            return httpx.BasicAuth(self.username, self.password or "")
        return None

    def httpx_kwargs(self) -> dict[str, Any]:
        """Arguments shared by the async and the sync (discovery) httpx clients."""
        kwargs: dict[str, Any] = {
            "base_url": self.server,
            "verify": self.ssl_context(),
            "auth": self.auth(),
        }
        if self.proxy_url:
            kwargs["proxy"] = self.proxy_url
        return kwargs


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class BearerTokenAuth(httpx.Auth):
    """``Authorization: Bearer``; a token file is re-read at most every minute (rotation)."""

    def __init__(self, token: str | None, token_file: str | None):
        self._token = token
        self._file = token_file
        self._read_at = -1e18

    def _current(self) -> str:
        if self._file and time.monotonic() - self._read_at > TOKEN_REREAD_SECS:
            try:
                self._token = Path(self._file).read_text().strip()
                self._read_at = time.monotonic()
            except OSError as exc:
                if not self._token:
                    raise KubeConfigError(f"token file {self._file}: {exc}") from None
        return self._token or ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        yield request
