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
    """The subject's CN; with several, the last one, as Go's x509 (and so Calico's Typha and
    Felix) reads it: a certificate must not pass one side's CN check and fail the other's."""
    if not cert:
        return None
    found = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                found = str(value)
    return found


def tls_error_text(exc: BaseException) -> str:
    """What went wrong in a TLS handshake, for the log: each exception's type and message
    along the chain. trio reports a failed handshake as a ``BrokenResourceError`` whose
    message is empty; the reason (e.g. ``[SSL: TLSV1_ALERT_UNKNOWN_CA] ...``) is in the
    ``ssl.SSLError`` behind it."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 4:
        seen.add(id(cur))
        text = str(cur)
        parts.append(f"{type(cur).__name__}: {text}" if text else type(cur).__name__)
        cur = cur.__cause__ or cur.__context__
    return " <- ".join(parts)


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
