"""A SIGKILL of the Typha replica Felix is connected to, with a second replica: Felix reconnects
to the other one, resyncs and programs a change it missed, without restarting and without the
dataplane ever losing a fact it should keep.  Run for typha-py and for Calico Typha, two rounds
each (the killed replica comes back, then the other one is killed).  The set-up and the round are
in `tests.felix.reconnect`; the reconnect -> programmed times it measures are printed here and
recorded by `python -m load.felix_reconnect` (docs/benchmarks.md), not asserted.

Positive controls: the change is written while Felix's replica is paused, and Felix's dataplane
is checked not to have it before the SIGKILL (so what is programmed afterwards came through the
other replica); the end state differs from the start by exactly that change; and the sampler's
own control (a fact removed behind Felix's back is seen) runs at the end.
"""

from __future__ import annotations

import pytest

from tests.dataplane.nstools import nsrun
from tests.felix import reconnect
from tests.felix.lab import FelixLab
from tests.felix.test_felix_drain import NGINX_IP, Sampler

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.k8s]

FELIX_TEST_SECONDS = 300


@pytest.mark.parametrize("typha_kind", ["typha-py", "calico"])
def test_felix_reconnects_after_its_replica_is_sigkilled(
    felix_lab: FelixLab, typha_kind: str
) -> None:
    s = reconnect.set_up(felix_lab, typha_kind)
    rounds = [reconnect.one_round(s), reconnect.one_round(s)]
    for r in rounds:
        print(
            f"\n{typha_kind} SIGKILL of {r.killed} -> Felix on {r.moved_to}: "
            f"connection restarted {r.detect_s:.3f}s, resync complete {r.resync_s:.3f}s, "
            f"change programmed {r.programmed_s:.3f}s; failed attempts {r.failed_attempts}; "
            f"sampler {r.samples} at {r.sample_rate_hz} Hz"
        )
        reconnect.check(r)
    # Both directions of the change were exercised: a member removed, then added back.
    assert [r.end_change[0][:1] for r in rounds] == ["-", "+"], [r.end_change for r in rounds]
    assert rounds[1].killed == rounds[0].moved_to  # the second round killed the other replica
    # Positive control for the sampler: a fact removed behind Felix's back is seen.
    before = felix_lab.snapshot().flat()
    felix_lab.stop(s.felix)
    nsrun(felix_lab.node, "ip", "route", "del", NGINX_IP, "dev", "calia53571dc704")
    lost = before - Sampler(felix_lab.node, before).sample().flat()
    assert any(f.startswith(f"route {NGINX_IP} dev") for f in lost), lost
