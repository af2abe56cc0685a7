"""TLS for the sync server with Typha's rules (docs/architecture.md, "TLS").

The server demands and verifies a client certificate, then checks its identity: when both a
CN and a URI SAN are configured, either may match; when one is configured, it must match.
"""

from __future__ import annotations

import ssl
from typing import Any


def server_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(
    cert_file: str, key_file: str, ca_file: str, *, server_name_check: bool = False
) -> ssl.SSLContext:
    """Client side: verify the chain against our CA; Felix checks CN/URI SAN itself rather
    than the hostname (Typha is reached by IP), so hostname checking is off by default."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = server_name_check
    ctx.load_verify_locations(ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def common_name(cert: dict[str, Any] | None) -> str | None:
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def uri_sans(cert: dict[str, Any] | None) -> list[str]:
    if not cert:
        return []
    return [str(v) for (k, v) in cert.get("subjectAltName", ()) if k == "URI"]


def check_peer_identity(cert: dict[str, Any] | None, want_cn: str, want_uri_san: str) -> str | None:
    """None if the certificate is acceptable, else the reason it is not."""
    if cert is None:
        return "no client certificate"
    if not want_cn and not want_uri_san:
        return None
    if want_cn and common_name(cert) == want_cn:
        return None
    if want_uri_san and want_uri_san in uri_sans(cert):
        return None
    wanted = " or ".join(
        x for x in (want_cn and f"CN={want_cn}", want_uri_san and f"URI SAN={want_uri_san}") if x
    )
    return f"certificate has CN={common_name(cert)!r}, URI SANs={uri_sans(cert)}; want {wanted}"
