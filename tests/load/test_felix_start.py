"""The pure parts of load/felix_start.py: reading Felix's log and checking the dataplane."""

from __future__ import annotations

import pytest

from load.felix_start import check_programmed, connected_to_in_sync_secs, in_sync_secs
from tests.felix import snapshot

LOG = (
    "2026-12-03 13:59:59.900 [INFO][1] sync_client.go 240: "
    "Successfully connected to Typha at 10.0.0.1:5473 after 2ms.\n"
    "2026-12-03 14:00:00.100 [INFO][1] felix/daemon.go 1453: Datastore now in sync.\n"
    "2026-12-03 14:00:01.350 [INFO][1] felix/int_dataplane.go 2001: "
    "Completed first update to dataplane. secsSinceStart=2.5\n"
)


def test_in_sync_is_the_first_update_minus_the_gap_between_the_lines() -> None:
    assert in_sync_secs(LOG, 2.5) == pytest.approx(1.25)
    assert in_sync_secs(LOG.splitlines()[1], 2.5) is None  # no in-sync line
    assert in_sync_secs(LOG, None) is None
    assert connected_to_in_sync_secs(LOG) == pytest.approx(0.2)
    assert connected_to_in_sync_secs(LOG.splitlines()[0]) is None


def _snap(with_route: bool) -> snapshot.Snapshot:
    save = "*filter\n:cali-tw-cali1 - [0:0]\n:cali-pi-p - [0:0]\n"
    save += "-A cali-tw-cali1 -j cali-pi-p\nCOMMIT\n"
    sets = "create cali40s:x hash:net family inet\nadd cali40s:x 10.0.0.1\n"
    routes = "10.200.0.1 dev cali1 scope link\n" if with_route else ""
    return snapshot.parse(save, sets, routes)


def test_check_programmed_counts_and_refuses_an_incomplete_dataplane() -> None:
    counts = check_programmed(_snap(True), ["cali1"], 1)
    assert counts["local_chains"] == 1 and counts["local_routes"] == 1
    assert counts["selector_set_members"] == 1 and counts["policy_chains"] == 1
    with pytest.raises(AssertionError, match="1 routes missing"):
        check_programmed(_snap(False), ["cali1"], 1)
