"""pytest fixtures for the real third-party peers.

Register with `pytest_plugins = ["tests.peers.plugin"]` in tests/conftest.py.

A missing binary skips the test on a developer machine (with the command that builds it), but
fails loudly when CI is set: in CI the scripts must have installed everything, and a silent skip
would hide a broken install step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.peers.etcd import EtcdServer, find_etcd
from tests.peers.kube_apiserver import KubeApiServer, find_kube_apiserver
from tests.peers.process import install_sigterm_cleanup
from tests.peers.prometheus import PrometheusServer, find_prometheus
from tests.peers.toxiproxy import ToxiproxyServer, find_toxiproxy

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "config" / "crds"


def pytest_configure(config: pytest.Config) -> None:
    """A `timeout`/CI SIGTERM on pytest must not leave peers running (they have their own
    session, so the signal does not reach them); atexit covers normal and error exits."""
    install_sigterm_cleanup()


def require_binary(finder: Callable[[], str | None], what: str, how: str) -> str:
    """Return the binary path, or skip (developer machine) / fail (CI) with `how` to fix it."""
    path = finder()
    if path:
        return path
    msg = f"{what} binary not found; install it with: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {msg}", pytrace=False)
    pytest.skip(msg)


def _etcd_binary() -> str:
    return require_binary(
        find_etcd, "etcd", "scripts/build-peers.sh etcd (or scripts/setup-system.sh)"
    )


EtcdFactory = Callable[..., EtcdServer]
PrometheusFactory = Callable[..., PrometheusServer]


@contextmanager
def _closing_factory(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory that builds a peer with ``make``, starts it and returns it; every peer it
    started is closed, last first, when the ``with`` ends."""
    started: list[Any] = []

    def factory(*args: Any, **kwargs: Any) -> Any:
        server = make(*args, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture
def etcd_factory() -> Iterator[EtcdFactory]:
    """Start extra etcd servers: `etcd_factory(tls=EtcdTLS.generate(tmp_path), tmpfs=True)`.

    Every server started here is closed (process stopped, data removed) after the test.
    """
    binary = _etcd_binary()
    with _closing_factory(lambda **kw: EtcdServer(**{"binary": binary, **kw})) as factory:
        yield factory


@pytest.fixture
def etcd_server(etcd_factory: EtcdFactory) -> EtcdServer:
    """A fresh, empty etcd for this test (plain HTTP on loopback, no auth)."""
    return etcd_factory()


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeApiServer]:
    """One kube-apiserver (+ private etcd) for the session, with config/crds/ applied.

    Tests share it: use unique namespaces / object names.
    """
    binary = require_binary(
        find_kube_apiserver, "kube-apiserver", "scripts/build-peers.sh kube-apiserver"
    )
    server = KubeApiServer(binary=binary)
    try:
        server.start()
        if CRD_DIR.is_dir() and any(CRD_DIR.glob("*.y*ml")):
            server.apply_crds(CRD_DIR)
        yield server
    finally:
        server.close()


@pytest.fixture
def toxiproxy_server() -> Iterator[ToxiproxyServer]:
    """A fresh toxiproxy server (starts in ~50 ms); `.client` is a ToxiproxyClient."""
    binary = require_binary(find_toxiproxy, "toxiproxy-server", "scripts/build-peers.sh toxiproxy")
    with ToxiproxyServer(binary=binary) as server:
        yield server


@pytest.fixture
def prometheus_factory() -> Iterator[PrometheusFactory]:
    """Start Prometheus servers scraping given targets: `prometheus_factory(["127.0.0.1:9091"])`.

    Accepts a list of host:port targets or {job: [targets]}, plus PrometheusServer kwargs.
    """
    binary = require_binary(find_prometheus, "prometheus", "scripts/setup-system.sh")

    def make(
        targets: Sequence[str] | Mapping[str, Sequence[str]], **kwargs: Any
    ) -> PrometheusServer:
        return PrometheusServer(targets, **{"binary": binary, **kwargs})

    with _closing_factory(make) as factory:
        yield factory
