"""Felix's Prometheus metrics for one node agent (docs/dataplane.md, "Metrics"), on a registry
of its own.

Each ``NodeAgent`` owns an ``AgentMetrics``: several agents can live in one process (the
cluster tests run three) without their numbers mixing, which the global default registry would
not allow. Names are Felix's; as everywhere in this project, prometheus-client exposes a counter
``felix_x`` as ``felix_x_total``.

Counters that the dataplane backend increments on its hot path are plain integers in
``DataplaneStats``; a collector reads them at scrape time, so the backend needs no locks and no
knowledge of Prometheus.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from felix_client.calc.state import DataplaneDelta, DataplaneState
from felix_client.dataplane.base import DataplaneStats
from typha.protocol import SyncStatus

# felix_resync_state: 1 = WaitForDatastore, 2 = ResyncInProgress, 3 = InSync.
RESYNC_STATE = {
    SyncStatus.WAIT_FOR_DATASTORE: 1,
    SyncStatus.RESYNC: 2,
    SyncStatus.IN_SYNC: 3,
}

_TABLE_LABELS = ["table", "ip_version"]


class _BackendCollector(Collector):
    """Exports a backend's ``DataplaneStats`` counters when scraped."""

    def __init__(self, stats: Callable[[], DataplaneStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        simple = (
            ("felix_ipset_calls", "ipset restore/list invocations.", s.ipset_calls),
            ("felix_ipset_errors", "ipset invocations that failed.", s.ipset_errors),
            ("felix_ipset_lines_executed", "Lines fed to ipset restore.", s.ipset_lines_executed),
            (
                "felix_iptables_restore_calls",
                "iptables-restore invocations.",
                s.iptables_restore_calls,
            ),
            (
                "felix_iptables_restore_errors",
                "iptables-restore invocations that failed.",
                s.iptables_restore_errors,
            ),
            ("felix_iptables_save_calls", "iptables-save invocations.", s.iptables_save_calls),
            (
                "felix_iptables_save_errors",
                "iptables-save invocations that failed.",
                s.iptables_save_errors,
            ),
            ("felix_route_table_calls", "Netlink route/neigh/link requests.", s.route_calls),
            ("felix_route_table_errors", "Netlink passes that failed.", s.route_errors),
        )
        for name, doc, value in simple:
            yield CounterMetricFamily(name, doc, value=value)
        lines = CounterMetricFamily(
            "felix_iptables_lines_executed",
            "Lines fed to iptables-restore, by table.",
            labels=_TABLE_LABELS,
        )
        for table, value in sorted(s.iptables_lines_executed.items()):
            lines.add_metric([table, "4"], value)
        yield lines
        yield SummaryMetricFamily(
            "felix_exec_time_micros",
            "Wall time of the dataplane's fork/exec calls, in microseconds.",
            count_value=s.exec_calls,
            sum_value=s.exec_seconds * 1e6,
        )


class AgentMetrics:
    """The metrics of one agent (see the module docstring)."""

    def __init__(self, stats: Callable[[], DataplaneStats]) -> None:
        r = self.registry = CollectorRegistry()
        self.resync_state = Gauge(
            "felix_resync_state",
            "Datastore sync state: 1 WaitForDatastore, 2 ResyncInProgress, 3 InSync.",
            registry=r,
        )
        self.resync_state.set(1)
        self.resyncs_started = Counter(
            "felix_resyncs_started", "Datastore resyncs started.", registry=r
        )
        self.calc_update_time = Summary(
            "felix_calc_graph_update_time_seconds",
            "Time the calculation took per flush of received updates.",
            registry=r,
        )
        self.updates_processed = Counter(
            "felix_calc_graph_updates_processed",
            "Datastore updates handed to the calculation, by type.",
            ["type"],
            registry=r,
        )
        self.invalid_values = Counter(
            "felix_calc_invalid_values",
            "Received values that did not parse (each treated as a deletion of its key).",
            registry=r,
        )
        self.calc_failures = Counter(
            "felix_calc_failures",
            "Keys or policies whose calculation raised (contained: the key is treated as "
            "deleted, the policy has no rules).",
            registry=r,
        )
        self._calc_counts = (0, 0)
        self.output_events = Counter(
            "felix_calc_graph_output_events",
            "Dataplane changes the calculation emitted.",
            registry=r,
        )
        self.apply_time = Summary(
            "felix_int_dataplane_apply_time_seconds",
            "Time of each incremental dataplane apply after the initial resync.",
            registry=r,
        )
        self.initial_resync_time = Gauge(
            "felix_int_dataplane_initial_resync_time_seconds",
            "Time of the first full dataplane resync.",
            registry=r,
        )
        self.failures = Counter(
            "felix_int_dataplane_failures", "Dataplane applies that failed.", registry=r
        )
        self.msg_batch_size = Summary(
            "felix_int_dataplane_msg_batch_size",
            "Dataplane changes per apply.",
            registry=r,
        )
        self.messages = Counter(
            "felix_int_dataplane_messages",
            "Dataplane changes applied, by type.",
            ["type"],
            registry=r,
        )

        def gauge(name: str, doc: str, labels: list[str] | None = None) -> Gauge:
            return Gauge(name, doc, labels or [], registry=r)

        self.active_local_endpoints = gauge(
            "felix_active_local_endpoints", "Local workload endpoints programmed."
        )
        self.active_local_policies = gauge(
            "felix_active_local_policies", "Policies active on this node."
        )
        self.active_local_selectors = gauge(
            "felix_active_local_selectors", "Selector and named-port ipsets on this node."
        )
        self.cluster_hosts = gauge("felix_cluster_num_hosts", "Nodes in the cluster.")
        self.cluster_weps = gauge(
            "felix_cluster_num_workload_endpoints", "Workload endpoints in the cluster."
        )
        self.cluster_heps = gauge(
            "felix_cluster_num_host_endpoints", "Host endpoints in the cluster."
        )
        self.cluster_policies = gauge("felix_cluster_num_policies", "Policies in the cluster.")
        self.cluster_profiles = gauge("felix_cluster_num_profiles", "Profiles in the cluster.")
        self.cluster_tiers = gauge("felix_cluster_num_tiers", "Tiers in the cluster.")
        self.ipsets_calico = gauge("felix_ipsets_calico", "Calico ipsets programmed.")
        self.iptables_chains = gauge(
            "felix_iptables_chains", "Calico chains programmed.", _TABLE_LABELS
        )
        self.iptables_rules = gauge(
            "felix_iptables_rules", "Rules in Calico chains programmed.", _TABLE_LABELS
        )
        self.route_table_routes = gauge(
            "felix_route_table_num_routes", "Routes this node programs."
        )
        self.routes_pending = gauge(
            "felix_route_table_pending_routes",
            "Routes waiting for their interface (not a Felix metric).",
        )
        r.register(_BackendCollector(stats))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- recording -------------------------------------------------------------------------------

    def on_status(self, status: SyncStatus) -> None:
        self.resync_state.set(RESYNC_STATE.get(status, 1))
        if status is SyncStatus.RESYNC:
            self.resyncs_started.inc()

    def record_calc_counts(self, invalid_values: int, calc_failures: int) -> None:
        """Export the engine's running counts (the growth since the last call)."""
        last_invalid, last_failures = self._calc_counts
        self.invalid_values.inc(invalid_values - last_invalid)
        self.calc_failures.inc(calc_failures - last_failures)
        self._calc_counts = (invalid_values, calc_failures)

    def record_updates(self, by_type: Mapping[str, int]) -> None:
        for kind, n in by_type.items():
            self.updates_processed.labels(kind).inc(n)

    def record_delta(self, delta: DataplaneDelta) -> int:
        """Count a delta's changes by type; returns the total."""
        counts = {
            "ipset_update": len(delta.ipsets_created)
            + len(delta.ipset_members_added)
            + len(delta.ipset_members_removed),
            "ipset_remove": len(delta.ipsets_removed),
            "chain_update": len(delta.filter_chains_changed) + len(delta.nat_chains_changed),
            "chain_remove": len(delta.filter_chains_removed) + len(delta.nat_chains_removed),
            "route_update": len(delta.routes_added),
            "route_remove": len(delta.routes_removed),
            "vtep_update": len(delta.neighbours_added) + len(delta.fdb_added),
            "vtep_remove": len(delta.neighbours_removed) + len(delta.fdb_removed),
        }
        total = sum(counts.values())
        for kind, n in counts.items():
            if n:
                self.messages.labels(kind).inc(n)
        if total:
            self.output_events.inc(total)
            self.msg_batch_size.observe(total)
        return total

    def record_state(
        self, state: DataplaneState, cluster: Mapping[str, int], pending_routes: int
    ) -> None:
        """Gauges from the state just applied (all O(chains + sets), no endpoint scans)."""
        self.active_local_endpoints.set(
            sum(1 for c in state.filter_chains if c.startswith("cali-tw-"))
        )
        self.active_local_policies.set(
            len({c[8:] for c in state.filter_chains if c.startswith(("cali-pi-", "cali-po-"))})
        )
        self.active_local_selectors.set(
            sum(1 for n in state.ipsets if n.startswith(("cali40s:", "cali40n:")))
        )
        self.ipsets_calico.set(len(state.ipsets))
        for table, chains in (("filter", state.filter_chains), ("nat", state.nat_chains)):
            self.iptables_chains.labels(table, "4").set(len(chains))
            self.iptables_rules.labels(table, "4").set(sum(len(c) for c in chains.values()))
        self.route_table_routes.set(len(state.routes))
        self.routes_pending.set(pending_routes)
        self.cluster_hosts.set(cluster.get("hosts", 0))
        self.cluster_weps.set(cluster.get("workload_endpoints", 0))
        self.cluster_heps.set(cluster.get("host_endpoints", 0))
        self.cluster_policies.set(cluster.get("policies", 0))
        self.cluster_profiles.set(cluster.get("profiles", 0))
        self.cluster_tiers.set(cluster.get("tiers", 0))

    # --- serving ---------------------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP server (prometheus-client's own thread); returns the port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop the HTTP server (blocks up to its 0.5 s poll interval: call from a thread)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            with contextlib.suppress(OSError):
                server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample's current value (tests and status output)."""
        return self.registry.get_sample_value(name, dict(labels or {}))
