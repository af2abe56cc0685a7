"""Fixtures for tests against Calico's own programs (built by `build-peers.sh calico`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.peers.calico_typha import calico_crd_dir, find_calico_typha, find_syncdump
from tests.peers.kube_apiserver import KubeApiServer, find_kube_apiserver
from tests.peers.plugin import require_binary

BUILD = "scripts/build-peers.sh calico"


@pytest.fixture(scope="session")
def calico_binaries() -> dict[str, str]:
    """calico-typha and syncdump (skip on a developer machine without them; fail in CI)."""
    return {
        "calico-typha": require_binary(find_calico_typha, "calico-typha", BUILD),
        "syncdump": require_binary(find_syncdump, "syncdump", BUILD),
    }


KubeFactory = Callable[[], KubeApiServer]


@pytest.fixture
def calico_kube_factory(calico_binaries: dict[str, str]) -> Iterator[KubeFactory]:
    """Fresh kube-apiservers (each with its own etcd) with Calico's own CRDs from the tarball.

    Not the session `kube_apiserver`: that one serves the project's schemaless CRDs, and the
    start-up-write tests need an apiserver nothing else has written to.
    """
    binary = require_binary(
        find_kube_apiserver, "kube-apiserver", "scripts/build-peers.sh kube-apiserver"
    )
    crds = calico_crd_dir()
    if not crds.is_dir():
        pytest.fail(f"Calico CRDs not found at {crds}; run {BUILD}", pytrace=False)
    started: list[KubeApiServer] = []

    def factory() -> KubeApiServer:
        server = KubeApiServer(binary=binary)
        started.append(server)
        server.start()
        server.apply_crds(crds)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.close()
