"""TLS refusals say why in the log, and a certificate with several CNs is judged by the last one,
as Go's x509 (Calico's Typha and Felix) judges it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.typha_harness import run_typha
from typha.sync.memory import MemoryDatastore
from typha.tls import client_ssl_context, common_name

from .test_tls import server_cfg, try_sync
from .tlsutil import TLSFiles


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return TLSFiles(tmp_path)


def _handshake_failures(logs: list[dict]) -> list[str]:
    return [e["error"] for e in logs if e["event"] == "TLS handshake failed"]


def _says_why(errors: list[str], reason: str) -> None:
    """The client retried for a while: every refusal names an exception and its message, and
    the expected reason is among them (the attempt cut off by the test's end may show
    another, such as an unexpected EOF)."""
    assert errors, "no TLS handshake failure logged"
    assert any(f"[SSL: {reason}]" in e for e in errors), errors
    assert all(e.startswith("BrokenResourceError <- ") and ": " in e for e in errors), errors


async def test_tls_handshake_refusals_log_the_reason(tls: TLSFiles, tmp_path: Path) -> None:
    ds = MemoryDatastore({"/calico/v1/config/X": "1"})
    async with run_typha(ds, server_cfg(tls, ClientCN="calico-node")) as typha:
        # Positive control: a good client is served and no handshake failure is logged.
        with capture_logs() as logs:
            cert, key = tls.issue("good", cn="calico-node")
            good = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert good.in_sync.is_set()
        assert _handshake_failures(logs) == []

        # A certificate from a CA the server does not trust.
        (tmp_path / "other").mkdir()
        other = TLSFiles(tmp_path / "other")
        cert, key = other.issue("stranger", cn="calico-node")
        with capture_logs() as logs:
            await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        _says_why(_handshake_failures(logs), "CERTIFICATE_VERIFY_FAILED")

        # No client certificate at all.
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        bare.check_hostname = False
        bare.load_verify_locations(tls.ca_file)
        with capture_logs() as logs:
            await try_sync(typha.address, bare)
        _says_why(_handshake_failures(logs), "PEER_DID_NOT_RETURN_A_CERTIFICATE")

        # Plain TCP (our msgpack hello) to the TLS port.
        with capture_logs() as logs:
            await try_sync(typha.address, None)
        _says_why(_handshake_failures(logs), "WRONG_VERSION_NUMBER")


def test_common_name_is_the_last_cn_as_in_go() -> None:
    one = {"subject": ((("commonName", "only"),),)}
    two = {
        "subject": (
            (("commonName", "first"),),
            (("organizationName", "o"),),
            (("commonName", "last"),),
        )
    }
    assert common_name(one) == "only"
    assert common_name(two) == "last"
    assert common_name({"subject": ((("organizationName", "o"),),)}) is None


async def test_a_certificate_with_two_cns_is_judged_by_the_last(tls: TLSFiles) -> None:
    ds = MemoryDatastore({"/calico/v1/config/X": "1"})
    async with run_typha(ds, server_cfg(tls, ClientCN="calico-node")) as typha:
        # Go reads CN=calico-node from this one (the last CN): served.
        cert, key = tls.issue("last-ok", cns=("intruder", "calico-node"))
        last = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert last.in_sync.is_set() and last.state == ds.data
        # ... and CN=intruder from this one: refused, though its first CN matches.
        cert, key = tls.issue("first-ok", cns=("calico-node", "intruder"))
        with capture_logs() as logs:
            first = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert not first.in_sync.is_set() and first.state == {}
        refusals = [e for e in logs if e["event"] == "client certificate refused"]
        assert refusals and "CN='intruder'" in refusals[0]["reason"], logs
        # Positive control: a single matching CN is served.
        cert, key = tls.issue("single", cn="calico-node")
        single = await try_sync(typha.address, client_ssl_context(cert, key, tls.ca_file))
        assert single.in_sync.is_set()
