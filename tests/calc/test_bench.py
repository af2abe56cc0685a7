"""The synthetic large cluster and the benchmark helper (sizes only; no timing assertions)."""

from __future__ import annotations

from felix_client.calc.synthetic import benchmark, build_cluster


def test_benchmark_helper_small_cluster() -> None:
    kvs = build_cluster(n_endpoints=2000, n_policies=100, n_nodes=50, n_namespaces=10)
    result = benchmark(kvs, node_name="node-0")
    assert result["kvs"] == len(kvs)
    assert result["calc_s"] > 0 and result["total_s"] >= result["calc_s"]
    engine = result.pop("engine")
    assert len(engine.model.weps) == 2000
    assert len([w for w in engine.model.weps.values() if w.host == "node-0"]) == 40
    assert result["routes"] > 40  # local /32s, own blackhole, remote blocks


def test_full_size_cluster_shape() -> None:
    kvs = build_cluster()
    weps = [k for k, _ in kvs if "/workload/" in k]
    policies = [
        k
        for k, _ in kvs
        if k.startswith("/calico/v1/policy/") and "/tier/" not in k and "/profile/" not in k
    ]
    assert len(weps) == 20_000 and len(policies) == 500
    assert sum(1 for k in weps if k.startswith("/calico/v1/host/node-0/")) == 40
    result = benchmark(kvs)
    assert result["filter_chains"] > 80  # 40 endpoints x 2 + policies + profiles + static
    assert result["ipset_members"] > 1000
