"""Felix's metrics, per agent, over HTTP: two agents in one process keep separate numbers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from felix_client.agent import NodeAgent, update_type
from felix_client.calc import synthetic as s
from tests.dataplane import sample
from typha.protocol import SyncStatus


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_each_agent_serves_its_own_felix_metrics(tmp_path: Path) -> None:
    agents = {
        node: NodeAgent(node, dry_run_dir=tmp_path / node, metrics_port=-1)
        for node in (sample.NODE, "n2")
    }
    async with trio.open_nursery() as nursery:
        for agent in agents.values():
            await nursery.start(agent.run)
            assert agent.metrics_bound_port
        n1 = agents[sample.NODE]
        port1 = n1.metrics_bound_port
        m = await trio.to_thread.run_sync(scrape, n1.metrics_bound_port)
        assert m["felix_resync_state"] == 1  # WaitForDatastore before any status
        for agent in agents.values():
            agent.on_status(SyncStatus.RESYNC)
            agent.on_updates(sample.sample_kvs())
            agent.on_status(SyncStatus.IN_SYNC)
            await agent.wait_applied()
        m = await trio.to_thread.run_sync(scrape, n1.metrics_bound_port)
        m2 = await trio.to_thread.run_sync(scrape, agents["n2"].metrics_bound_port)
        assert m["felix_resync_state"] == 3
        assert m["felix_resyncs_started_total"] == 1
        assert m["felix_cluster_num_workload_endpoints"] == 3
        assert m["felix_cluster_num_hosts"] == 2
        assert m["felix_cluster_num_policies"] == 2
        assert m["felix_cluster_num_tiers"] == 2
        # Local working set: n1 has the database and "other"; n2 only the frontend.
        assert m["felix_active_local_endpoints"] == 2
        assert m2["felix_active_local_endpoints"] == 1
        assert m["felix_active_local_policies"] == 2
        assert m2["felix_active_local_policies"] == 1  # only the GNP selects the frontend
        assert m["felix_ipsets_calico"] == len(n1.state.ipsets)  # type: ignore[union-attr]
        assert m['felix_iptables_chains{ip_version="4",table="filter"}'] == len(
            n1.state.filter_chains  # type: ignore[union-attr]
        )
        assert m['felix_iptables_rules{ip_version="4",table="nat"}'] >= 2
        assert m["felix_route_table_num_routes"] == len(n1.state.routes)  # type: ignore[union-attr]
        assert m['felix_calc_graph_updates_processed_total{type="workload_endpoint"}'] == 3
        assert m["felix_int_dataplane_initial_resync_time_seconds"] > 0
        assert m["felix_int_dataplane_apply_time_seconds_count"] == 0  # only the initial resync
        assert m["felix_int_dataplane_failures_total"] == 0
        assert m["felix_calc_invalid_values_total"] == 0 == m["felix_calc_failures_total"]

        # An incremental apply is timed; the other agent's numbers do not move.
        n1.on_updates([s.wep(sample.NODE, "myproject", "new", "10.65.0.9", {"app": "x"})])
        await n1.wait_applied()
        m = await trio.to_thread.run_sync(scrape, n1.metrics_bound_port)
        m2b = await trio.to_thread.run_sync(scrape, agents["n2"].metrics_bound_port)
        assert m["felix_int_dataplane_apply_time_seconds_count"] == 1
        assert m["felix_active_local_endpoints"] == 3
        assert m["felix_calc_graph_update_time_seconds_count"] >= 2
        assert m2b["felix_int_dataplane_apply_time_seconds_count"] == 0
        assert m2b["felix_cluster_num_workload_endpoints"] == 3
        # A value the node cannot parse is counted (and is a deletion of its key).
        key, value = s.wep(sample.NODE, "myproject", "bad", "10.65.0.10", {"app": "x"})
        n1.on_updates([(key, {**value, "labels": {"app": {"nested": ["not a label"]}}})])
        await n1.wait_applied()
        m = await trio.to_thread.run_sync(scrape, n1.metrics_bound_port)
        assert m["felix_calc_invalid_values_total"] == 1
        nursery.cancel_scope.cancel()
    # The servers are gone with the agents.
    with pytest.raises(httpx.TransportError):
        await trio.to_thread.run_sync(scrape, port1)


def test_update_types() -> None:
    assert update_type(sample.db_wep()[0]) == "workload_endpoint"
    assert update_type(s.tier("default", 1)[0]) == "tier"
    assert update_type(s.policy("NetworkPolicy", "a", "b", "all()")[0]) == "policy"
    assert update_type(s.namespace_profiles("a")[0][0]) == "profile"
    assert update_type(s.pool("10.0.0.0/16")[0]) == "ip_pool"
    assert update_type(s.block("10.0.0.0/26", "n1")[0]) == "ipam_block"
    assert update_type(s.node("n1", "10.0.0.1/24")[0]) == "resource"
