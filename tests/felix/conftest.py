"""The Felix lab: a control namespace (etcd, the Typhas) and a node namespace (real Felix).

Felix tests run one at a time (the suite has no parallel runner, and each lab owns its
namespaces); each is bounded by `FELIX_TEST_SECONDS` through SIGALRM so a hung peer fails the test
instead of the suite (a test module may set its own `FELIX_TEST_SECONDS`, e.g. where a
kube-apiserver starts).  Namespaces left by a killed earlier run are reaped before each lab.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.dataplane.nstools import can_use_netns
from tests.felix.lab import FelixLab
from tests.felix.netns import reap_leftovers
from tests.peers.calico_typha import find_calico_typha
from tests.peers.felix import find_felix
from tests.peers.plugin import require_binary

BUILD = "scripts/build-peers.sh calico"
FELIX_TEST_SECONDS = 90


@pytest.fixture(autouse=True)
def _time_bound(request: pytest.FixtureRequest) -> Iterator[None]:
    seconds = int(getattr(request.module, "FELIX_TEST_SECONDS", FELIX_TEST_SECONDS))

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"Felix test exceeded its {seconds}s bound")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def felix_lab() -> Iterator[FelixLab]:
    why = can_use_netns()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    binaries = {
        "felix": require_binary(find_felix, "calico-felix", BUILD),
        "typha": require_binary(find_calico_typha, "calico-typha", BUILD),
    }
    reap_leftovers()
    lab = FelixLab(felix_binary=binaries["felix"], typha_binary=binaries["typha"])
    try:
        lab.setup()
        yield lab
    finally:
        lab.close()
