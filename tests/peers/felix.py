"""Real calico-felix as a test peer, in a node network namespace, and the datastore and Typha
peers moved into a control namespace.

Felix runs unchanged the way calico-node runs it, configured only through the environment
(`env -i`), under `unshare -m` with a private tmpfs on /var/lib (Felix writes
/var/lib/calico/mtu, which must not land on the host).  The settings a Felix built with CGO off
needs in a bare namespace are documented in docs/peers.md.  "Healthy" is Felix's own readiness
endpoint (in sync with its Typha and its dataplane programmed), and `first_update_logged` reads
Felix's "Completed first update to dataplane" log line.

`InNetns` wraps any `PeerProcess` so that it runs inside a namespace (`ip netns exec`) and its
health checks are made from inside it (`tests.felix.netns.entered`).
"""

from __future__ import annotations

import re
from typing import Any

from tests.calico.ourside import TyphaPy
from tests.felix.netns import entered
from tests.peers.calico_typha import CalicoTypha
from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client

FIRST_UPDATE = "Completed first update to dataplane."
_FIRST_UPDATE_SECS = re.compile(r"secsSinceStart=([0-9.]+)")


def find_felix() -> str | None:
    return find_binary("TYPHA_FELIX_BIN", "calico-felix", None)


class InNetns(PeerProcess):
    """Mixin: start the peer inside network namespace `netns` and check its health from there."""

    netns: str

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *super()._command()]

    def _is_healthy(self) -> bool:
        with entered(self.netns):
            return super()._is_healthy()


class NsEtcd(InNetns, EtcdServer):
    """etcd in the control namespace: clients on `host` (the veth address), metrics on loopback."""

    def __init__(self, netns: str, host: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.netns = netns
        self.host = host

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


class NsKubeApiServer(InNetns, KubeApiServer):
    """kube-apiserver in the control namespace, listening on `host` (its certificate and
    kubeconfig name that address), on an etcd in the same namespace."""

    def __init__(self, netns: str, host: str, **kwargs: Any):
        super().__init__(host=host, **kwargs)
        self.netns = netns


class _NsTypha(InNetns):
    """Either Typha in the control namespace, serving on `host` (the veth address)."""

    port: int

    def __init__(self, netns: str, host: str, **kwargs: Any):
        extra = dict(kwargs.pop("extra_env", None) or {})
        extra["TYPHA_SERVERHOST"] = host
        super().__init__(extra_env=extra, **kwargs)
        self.netns = netns
        self.host = host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class NsCalicoTypha(_NsTypha, CalicoTypha):
    """Calico Typha (Go) in the control namespace, serving on `host`."""


class NsTyphaPy(_NsTypha, TyphaPy):
    """typha-py in the control namespace, serving both protocols on `host`."""


class Felix(PeerProcess):
    """calico-felix as node `hostname` in `netns`, on etcd `etcd_url` or on the Kubernetes
    datastore of `kubeconfig`, through Typha `typha`; or, with `typha_service` (namespace, name)
    and a `kubeconfig`, through the Typhas an EndpointSlice of that Service lists, as calico-node
    finds its Typhas (the kubeconfig then serves only that discovery on etcd)."""

    name = "calico-felix"
    startup_timeout = 30.0
    stop_timeout = 5.0

    def __init__(
        self,
        *,
        netns: str,
        hostname: str,
        etcd_url: str | None = None,
        kubeconfig: str | None = None,
        typha: str | None = None,
        typha_service: tuple[str, str] | None = None,
        uplink: str = "eth0",
        binary: str | None = None,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float | None = None,
    ):
        super().__init__(startup_timeout=startup_timeout)
        found = binary or find_felix()
        if not found:
            raise PeerError("no calico-felix binary: run scripts/build-peers.sh calico")
        self.binary = found
        self.netns = netns
        self.hostname = hostname
        if etcd_url is None and kubeconfig is None:
            raise ValueError("give etcd_url= or kubeconfig=")
        if (typha is None) == (typha_service is None):
            raise ValueError("give exactly one of typha= or typha_service=")
        self.etcd_url = etcd_url
        self.kubeconfig = kubeconfig
        self.typha = typha
        self.typha_service = typha_service
        self.uplink = uplink
        self.extra_env = dict(extra_env or {})
        self.health_port = free_port()

    def _prepare(self) -> None:
        (self.tmpdir / "status").mkdir()

    def _command(self) -> list[str]:
        # A private mount namespace with a tmpfs over /var/lib: Felix's /var/lib/calico/mtu and
        # anything else it keeps there stay out of the host's file system.
        script = 'mount -t tmpfs felix-var-lib /var/lib && mkdir -p /var/lib/calico && exec "$0"'
        return [
            "ip", "netns", "exec", self.netns,
            "unshare", "-m", "--propagation", "private",
            "sh", "-c", script, self.binary,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.tmpdir),
            "FELIX_FELIXHOSTNAME": self.hostname,
            # Exact case: a CGO-off build panics in a BPF clean-up stub without it.
            "FELIX_DebugSkipCTLBCleanup": "true",
            "FELIX_BPFENABLED": "false",
            "FELIX_NFTABLESMODE": "Disabled",
            # An empty namespace looks "legacy" to Felix's detection; we read with iptables-nft.
            "FELIX_IPTABLESBACKEND": "nft",
            "FELIX_IPV6SUPPORT": "false",
            "FELIX_ENDPOINTSTATUSPATHPREFIX": str(self.tmpdir / "status"),
            "FELIX_MTUIFACEPATTERN": f"^{self.uplink}$",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSYS": "none",
            "FELIX_LOGSEVERITYSCREEN": "info",
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHHOST": LOOPBACK,
            "FELIX_HEALTHPORT": str(self.health_port),
            "FELIX_PROMETHEUSMETRICSENABLED": "false",
            "FELIX_USAGEREPORTINGENABLED": "false",
        }
        if self.etcd_url is not None:
            # libcalico-go's own variables: with only FELIX_DATASTORETYPE Felix would fall back
            # to Kubernetes.
            env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=self.etcd_url)
            env["FELIX_DATASTORETYPE"] = "etcdv3"
        else:
            env.update(DATASTORE_TYPE="kubernetes", FELIX_DATASTORETYPE="kubernetes")
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = self.kubeconfig
        if self.typha is not None:
            env["FELIX_TYPHAADDR"] = self.typha
        else:
            assert self.typha_service is not None
            env["FELIX_TYPHAK8SNAMESPACE"], env["FELIX_TYPHAK8SSERVICENAME"] = self.typha_service
        env.update(self.extra_env)
        return env

    def _is_healthy(self) -> bool:
        with entered(self.netns), loopback_client(timeout=2.0) as c:
            r = c.get(f"http://{LOOPBACK}:{self.health_port}/readiness")
        return r.status_code == 200

    def first_update_seconds(self) -> float | None:
        """Felix's own secsSinceStart on its "Completed first update" line, if logged yet."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if FIRST_UPDATE in line:
                m = _FIRST_UPDATE_SECS.search(line)
                return float(m.group(1)) if m else 0.0
        return None
