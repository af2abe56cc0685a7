"""``load.bench_dataplane`` smoke tests on a tiny cluster (the benchmark itself is run by hand,
never by the test suite).

Regression: on a small cluster the label-change stage found no local relabel that rewrote
chains and crashed taking the median of nothing; now every toggle must reach iptables.
"""

from __future__ import annotations

import pytest
import trio

from load import bench_dataplane as bd
from tests.dataplane.nstools import can_use_netns


def test_summary_of_nothing_says_so() -> None:
    assert bd.summary([]) == {"n": 0}
    assert bd.summary([0.002, 0.001, 0.003]) == {
        "n": 3,
        "median_ms": 2.0,
        "p90_ms": 3.0,
        "max_ms": 3.0,
    }


def test_remote_toggles_each_cross_an_active_rule_selector() -> None:
    from felix_client.calc.selector import parse

    kvs = bd.cluster(200, 10, local=2)
    # pod-1 is in ns1, where policy 1 selects app1 and admits app10 from ns1.
    (k0, v0), (k1, v1) = bd.local_endpoints(kvs)
    assert v1["labels"]["projectcalico.org/namespace"] == "ns1"
    local = [(k0, v0), (k1, {**v1, "labels": {**v1["labels"], "app": "app1"}})]
    mine = f"/calico/v1/host/{bd.LOCAL}/"
    remote = [(k, v) for k, v in kvs if "/workload/" in k and not k.startswith(mine)]
    toggles = bd.remote_toggles(kvs, local, remote, 3)
    assert len(toggles) == 3  # ns1 holds 3 remote pods
    assert len({k for k, _ in toggles}) == 3
    before = dict(remote)
    rules = [
        parse(r[f])
        for _, v in kvs
        if v and "inbound_rules" in v
        for r in v["inbound_rules"] + v["outbound_rules"]
        for f in ("src_selector", "dst_selector")
        if r.get(f)
    ]
    for key, value in toggles:
        old = before[key]["labels"]
        assert any(s.matches(old) != s.matches(value["labels"]) for s in rules)
    # Negative control: with no local endpoints, no policy is active, so nothing qualifies.
    assert bd.remote_toggles(kvs, [], remote, 5) == []


def test_scaling_is_per_endpoint_normalised() -> None:
    def size(ms: float, mib: float) -> dict[str, object]:
        def fig(v: float) -> dict[str, float]:
            return {"median": v, "min": v, "max": v}

        return {
            "summary": {
                "dryrun": {
                    "received_to_written_ms": fig(ms),
                    "peak_rss_mib": fig(mib),
                    "baseline_rss_mib": fig(50.0),
                }
            }
        }

    # 10x the endpoints: 10x the time is linear (1.0), 20x is twice as bad; RSS above baseline.
    out = bd.scaling({"100": size(10.0, 60.0), "1000": size(200.0, 150.0)})
    assert out["dryrun"] == {"received_to_written_ms": 2.0, "peak_rss_mib": 1.0}


@pytest.mark.skipif(bool(can_use_netns()), reason="needs network namespaces (root)")
def test_label_changes_on_a_tiny_cluster_measure_every_toggle() -> None:
    kvs = bd.cluster(200, 10, local=2)
    out = trio.run(bd.label_changes_in_netns, kvs, 5)
    assert out["local_endpoints"] == 2
    assert out["local_label_change_apply"]["n"] == 5
    assert out["local_label_change_apply"]["median_ms"] > 0
    assert out["remote_label_change_apply"]["n"] >= 1
