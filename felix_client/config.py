"""The node client's Typha settings, read like Felix reads them (README, "Configuration").

``FELIX_TYPHAADDR`` (host:port, comma-separated for several), ``FELIX_TYPHAK8SSERVICENAME`` and
``FELIX_TYPHAK8SNAMESPACE`` (discovery through EndpointSlices), ``FELIX_TYPHAREADTIMEOUT`` and
``FELIX_TYPHAWRITETIMEOUT`` (float seconds), and the TLS set ``FELIX_TYPHAKEYFILE``,
``FELIX_TYPHACERTFILE``, ``FELIX_TYPHACAFILE``, ``FELIX_TYPHACN``, ``FELIX_TYPHAURISAN``.
The literal ``none`` is ignored, as in Felix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class ClientConfigError(ValueError):
    pass


@dataclass
class TyphaClientConfig:
    addrs: list[str] = field(default_factory=list)
    k8s_service_name: str = ""
    k8s_namespace: str = "kube-system"
    read_timeout: float = 30.0
    write_timeout: float = 10.0
    key_file: str = ""
    cert_file: str = ""
    ca_file: str = ""
    cn: str = ""
    uri_san: str = ""

    @property
    def tls_enabled(self) -> bool:
        return any((self.key_file, self.cert_file, self.ca_file, self.cn, self.uri_san))

    def validate(self) -> None:
        if self.tls_enabled:
            missing = [
                n
                for n, v in (("key", self.key_file), ("cert", self.cert_file), ("CA", self.ca_file))
                if not v
            ]
            if missing or not (self.cn or self.uri_san):
                raise ClientConfigError(
                    "Typha TLS needs key, cert and CA files and a server CN or URI SAN "
                    f"(missing: {', '.join(missing) or 'CN/URI SAN'})"
                )


def _get(env: Mapping[str, str], name: str) -> str:
    for prefix in ("FELIX_", "CALICO_"):
        value = env.get(prefix + name, "")
        if value and value.lower() != "none":
            return value
    return ""


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ClientConfigError(f"FELIX_{name}={raw!r}: expected seconds") from None
    if value <= 0:
        raise ClientConfigError(f"FELIX_{name}={raw!r}: must be positive")
    return value


def from_env(env: Mapping[str, str] | None = None) -> TyphaClientConfig:
    env = os.environ if env is None else env
    addr = _get(env, "TYPHAADDR")
    cfg = TyphaClientConfig(
        addrs=[a.strip() for a in addr.split(",") if a.strip()],
        k8s_service_name=_get(env, "TYPHAK8SSERVICENAME"),
        k8s_namespace=_get(env, "TYPHAK8SNAMESPACE") or "kube-system",
        read_timeout=_seconds(env, "TYPHAREADTIMEOUT", 30.0),
        write_timeout=_seconds(env, "TYPHAWRITETIMEOUT", 10.0),
        key_file=_get(env, "TYPHAKEYFILE"),
        cert_file=_get(env, "TYPHACERTFILE"),
        ca_file=_get(env, "TYPHACAFILE"),
        cn=_get(env, "TYPHACN"),
        uri_san=_get(env, "TYPHAURISAN"),
    )
    cfg.validate()
    return cfg
