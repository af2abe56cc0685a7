"""Calico's own Typha (Go) as a test peer, and `syncdump`, our Go helper on Calico's client library.

Both binaries come from scripts/build-peers.sh (target `calico`), built from the Calico source
tree it unpacks under the peers dir; that tree also holds the CRDs Calico's Kubernetes datastore
expects (`libcalico-go/config/crd/`).  Calico Typha runs on a random loopback port against an
`EtcdServer` or a `KubeApiServer`; "healthy" means its own readiness endpoint answers 200, which
Go Typha reports once its syncers are in sync with the datastore.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client, peers_dir

SYNCER_TYPES = ("felix", "bgp", "tunnel-ip-allocation", "node-status")


def find_calico_typha() -> str | None:
    """$TYPHA_CALICO_TYPHA_BIN, else the build-peers cache (no PATH fallback: a `calico-typha`
    on PATH would be some other version than the one the tests were written against)."""
    return find_binary("TYPHA_CALICO_TYPHA_BIN", "calico-typha", None)


def find_syncdump() -> str | None:
    return find_binary("TYPHA_SYNCDUMP_BIN", "syncdump", None)


def calico_crd_dir() -> Path:
    """The CRDs of the Calico tree the peers were built from ($TYPHA_CALICO_CRD_DIR overrides)."""
    explicit = os.environ.get("TYPHA_CALICO_CRD_DIR")
    if explicit:
        return Path(explicit)
    return peers_dir() / "work" / "calico-src" / "libcalico-go" / "config" / "crd"


def typha_env(
    home: Path,
    port: int,
    health_port: int,
    *,
    etcd: EtcdServer | None,
    kube: KubeApiServer | None,
) -> dict[str, str]:
    """The environment both Typhas (Calico's and typha-py, a drop-in) read to serve on loopback
    ``port`` from ``etcd`` or ``kube``, with readiness on ``health_port`` and logs on stdout."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TYPHA_SERVERHOST": LOOPBACK,
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": "info",
        "TYPHA_HEALTHENABLED": "true",
        "TYPHA_HEALTHHOST": LOOPBACK,
        "TYPHA_HEALTHPORT": str(health_port),
        "TYPHA_PROMETHEUSMETRICSENABLED": "false",
    }
    if etcd is not None:
        env["TYPHA_DATASTORETYPE"] = "etcdv3"
        env["TYPHA_ETCDENDPOINTS"] = etcd.client_url
    else:
        assert kube is not None
        env["TYPHA_DATASTORETYPE"] = "kubernetes"
        env["KUBECONFIG"] = kube.kubeconfig_path
    return env


@dataclass(frozen=True)
class TyphaTLS:
    """Server-side TLS settings of Calico Typha (the files must exist)."""

    cert_file: str
    key_file: str
    ca_file: str
    client_cn: str = ""
    client_uri_san: str = ""


class TyphaProcess(PeerProcess):
    """A Typha (Calico's or typha-py) on random loopback ports against an etcd (`etcd=`) or a
    kube-apiserver (`kube=`), never both; ready when its `/readiness` says so. `address` is
    what clients dial."""

    def __init__(
        self,
        *,
        etcd: EtcdServer | None,
        kube: KubeApiServer | None,
        extra_env: Mapping[str, str] | None,
        startup_timeout: float | None,
    ):
        super().__init__(startup_timeout=startup_timeout)
        if (etcd is None) == (kube is None):
            raise ValueError("give exactly one of etcd= or kube=")
        self.etcd = etcd
        self.kube = kube
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.health_port = free_port()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _is_healthy(self) -> bool:
        with loopback_client(timeout=2.0) as c:
            r = c.get(f"http://{LOOPBACK}:{self.health_port}/readiness")
        return r.status_code == 200


class CalicoTypha(TyphaProcess):
    """calico-typha against an etcd (`etcd=`) or a kube-apiserver (`kube=`), never both.

    Configured only through the environment (the process gets no other variables), so the host's
    KUBECONFIG or DATASTORE_TYPE cannot leak in.  `address` is what clients dial.
    """

    name = "calico-typha"
    startup_timeout = 60.0
    stop_timeout = 10.0

    def __init__(
        self,
        *,
        etcd: EtcdServer | None = None,
        kube: KubeApiServer | None = None,
        binary: str | None = None,
        tls: TyphaTLS | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float | None = None,
    ):
        super().__init__(etcd=etcd, kube=kube, extra_env=extra_env, startup_timeout=startup_timeout)
        found = binary or find_calico_typha()
        if not found:
            raise PeerError("no calico-typha binary: run scripts/build-peers.sh calico")
        self.binary = found
        self.tls = tls

    @property
    def config_path(self) -> Path:
        return self.tmpdir / "typha.cfg"

    def _prepare(self) -> None:
        # An empty config file, so the default /etc/calico/typha.cfg of the host is never read.
        self.config_path.write_text("[global]\n")

    def _command(self) -> list[str]:
        return [self.binary, "--config-file", str(self.config_path)]

    def _env(self) -> dict[str, str]:
        env = typha_env(self.tmpdir, self.port, self.health_port, etcd=self.etcd, kube=self.kube)
        env["TYPHA_LOGSEVERITYSYS"] = "none"
        if self.kube is not None:
            # libcalico-go's own variables choose the Kubernetes client config.
            env["DATASTORE_TYPE"] = "kubernetes"
        if self.tls is not None:
            env["TYPHA_SERVERCERTFILE"] = self.tls.cert_file
            env["TYPHA_SERVERKEYFILE"] = self.tls.key_file
            env["TYPHA_CAFILE"] = self.tls.ca_file
            if self.tls.client_cn:
                env["TYPHA_CLIENTCN"] = self.tls.client_cn
            if self.tls.client_uri_san:
                env["TYPHA_CLIENTURISAN"] = self.tls.client_uri_san
        env.update(self.extra_env)
        return env


# -- syncdump ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTLS:
    """Calico's client-side TLS options (all of key/cert/CA, and a CN or a URI SAN)."""

    key_file: str
    cert_file: str
    ca_file: str
    server_cn: str = ""
    server_uri: str = ""

    def args(self) -> list[str]:
        out = ["-key-file", self.key_file, "-cert-file", self.cert_file, "-ca-file", self.ca_file]
        if self.server_cn:
            out += ["-server-cn", self.server_cn]
        if self.server_uri:
            out += ["-server-uri", self.server_uri]
        return out


def _syncdump_binary() -> str:
    binary = find_syncdump()
    if not binary:
        raise PeerError("no syncdump binary: run scripts/build-peers.sh calico")
    return binary


def syncdump(
    address: str,
    syncer_type: str,
    *,
    tls: ClientTLS | None = None,
    sentinel: str | None = None,
    sentinel_value: str | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Connect Calico's syncclient to `address`; once in sync (and the sentinel seen), the dump.

    The dump is `{"syncer_type", "status", "kvs": [{key, value, revision, v3_resource_version,
    update_type}]}` sorted by key; `value` is libcalico-go's SerializeValue of the parsed value.
    """
    cmd = [
        _syncdump_binary(),
        "-addr",
        address,
        "-type",
        syncer_type,
        "-timeout",
        f"{timeout}s",
    ]
    if tls is not None:
        cmd += tls.args()
    if sentinel:
        cmd += ["-sentinel", sentinel]
        if sentinel_value is not None:
            cmd += ["-sentinel-value", sentinel_value]
    cmd += list(extra_args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, check=False)
    if proc.returncode != 0:
        raise PeerError(f"syncdump {syncer_type} at {address} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def reserialize(dump: Mapping[str, Any], work_dir: Path) -> dict[str, Any]:
    """Run a dump written by another client through libcalico-go's ParseValue/SerializeValue.

    Entries Go cannot parse come back with `value: null` and an `error`.
    """
    src = work_dir / f"reserialize-in-{dump.get('syncer_type', 'x')}.json"
    src.write_text(json.dumps(dump))
    proc = subprocess.run(
        [_syncdump_binary(), "-reserialize", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise PeerError(f"syncdump -reserialize failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    # Fields the input did not carry (None) stay None rather than Go's zero values.
    absent = {
        e["key"]: [
            f for f in ("revision", "v3_resource_version", "update_type") if e.get(f) is None
        ]
        for e in dump["kvs"]
    }
    for e in result["kvs"]:
        for f in absent.get(e["key"], ()):
            e[f] = None
    return result
