"""Certificates for TLS tests: a trustme CA, plus client certs with URI SANs (which trustme
cannot issue), signed by the same CA with ``cryptography``."""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class TLSFiles:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = trustme.CA()
        self.ca_file = str(tmp / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(
        self,
        name: str,
        *,
        cn: str | None = None,
        uri: str | None = None,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        cns: tuple[str, ...] = (),
    ) -> tuple[str, str]:
        """Write a cert+key pair usable as server and client; returns (cert, key) paths.
        ``cns``: several subject CNs, in this order, each its own RDN (instead of ``cn``)."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts if not h[0].isdigit()]
        import ipaddress

        sans += [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts if h[0].isdigit()]
        if uri:
            sans.append(x509.UniformResourceIdentifier(uri))
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, c) for c in (cns or (cn or name,))]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        cert_path = self.tmp / f"{name}.crt"
        key_path = self.tmp / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_path), str(key_path)
