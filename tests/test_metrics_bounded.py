"""The metrics port under idle connections: bounded and timed out, like the health port.

Before: prometheus-client's server gave every connection its own thread with no timeout (2,000
idle connections were 2,000 threads and +50 MB, for as long as the clients liked). Now both
ports are served by typha/http.py: at most 64 connections at a time (the rest are closed at
once), each with 10 s for its request.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import httpx
import trio

from .peers.ports import free_ports

IDLE = 1500


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def open_idle(port: int, n: int) -> list[trio.socket.SocketType]:
    socks = []
    for _ in range(n):
        s = trio.socket.socket()
        await s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


async def closed_by_server(sock: trio.socket.SocketType) -> bool:
    """True if the server has closed (or reset) this idle connection."""
    with trio.move_on_after(0.01):
        try:
            return await sock.recv(1) == b""
        except OSError:
            return True
    return False


async def test_idle_connections_to_the_metrics_port_are_bounded_and_timed_out() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * IDLE))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the child inherits it too
    port, metrics_port = free_ports(2)
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "true",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_PROMETHEUSMETRICSENABLED": "true",
        "TYPHA_PROMETHEUSMETRICSPORT": str(metrics_port),
        "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": "none",
        "TYPHA_LOGSEVERITYSCREEN": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socks: list[trio.socket.SocketType] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:

            async def scrape() -> httpx.Response:
                return await http.get(f"http://127.0.0.1:{metrics_port}/metrics")

            with trio.fail_after(20):
                while True:
                    try:
                        if (await scrape()).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
            threads_before = threads_of(proc.pid)
            socks = await open_idle(metrics_port, IDLE)
            opened = time.monotonic()
            await trio.sleep(1.0)
            threads_idle = threads_of(proc.pid)
            # Positive control: a scrape still works with all of them open, and has our metrics.
            r = await scrape()
            assert r.status_code == 200 and "typha_connections_accepted" in r.text
            still_open = [s for s in socks if not await closed_by_server(s)]
            # All but the cap's worth were closed at once (the oldest give way to new ones)...
            assert len(still_open) <= 64, len(still_open)
            # ... and those time out: 10 s for a request.
            with trio.fail_after(20):
                while still_open:
                    await trio.sleep(0.5)
                    still_open = [s for s in still_open if not await closed_by_server(s)]
            timed_out_after = time.monotonic() - opened
            assert proc.poll() is None
            assert (await scrape()).status_code == 200
        print(
            f"\nFIGURE metrics port, {IDLE} idle connections: threads {threads_before} -> "
            f"{threads_idle}; last idle connection closed after {timed_out_after:.1f} s"
        )
        assert threads_idle <= threads_before + 2, (threads_before, threads_idle)
        assert 8 <= timed_out_after <= 20, timed_out_after
    finally:
        for s in socks:
            s.close()
        proc.kill()
        proc.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_metrics_over_tls_with_client_certificates_and_an_idle_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """HTTPS /metrics: a verified client certificate scrapes, none is refused; an idle TCP
    client (no TLS handshake) does not hold up other scrapes (prometheus-client did the
    handshake in its accept loop)."""
    import ssl

    from tests.typha_harness import make_config
    from typha.app import Typha
    from typha.sync.memory import MemoryDatastore

    from .tlsutil import TLSFiles

    tls = TLSFiles(tmp_path)
    cert, key = tls.issue("metrics")
    client_cert, client_key = tls.issue("scraper")
    cfg = make_config(
        PrometheusMetricsEnabled=True,
        PrometheusMetricsHost="127.0.0.1",
        PrometheusMetricsPort=-1,
        PrometheusMetricsCertFile=cert,
        PrometheusMetricsKeyFile=key,
        PrometheusMetricsCAFile=tls.ca_file,
        PrometheusMetricsClientAuth="RequireAndVerifyClientCert",
    )
    typha = Typha(cfg, MemoryDatastore())
    async with trio.open_nursery() as nursery:
        await nursery.start(typha.run)
        assert typha.metrics_port
        url = f"https://127.0.0.1:{typha.metrics_port}/metrics"
        idle = trio.socket.socket()
        await idle.connect(("127.0.0.1", typha.metrics_port))  # never says anything
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.load_cert_chain(client_cert, client_key)
        async with httpx.AsyncClient(verify=ctx, trust_env=False, timeout=5) as http:
            r = await http.get(url)
        assert r.status_code == 200 and "typha_connections_accepted" in r.text
        bare = ssl.create_default_context(cafile=tls.ca_file)
        async with httpx.AsyncClient(verify=bare, trust_env=False, timeout=5) as http:
            try:
                refused = (await http.get(url)).status_code != 200
            except httpx.HTTPError:
                refused = True
        assert refused  # no client certificate: no metrics
        idle.close()
        nursery.cancel_scope.cancel()
