"""Prometheus metrics: Typha's ``typha_*`` names, types and labels (README, "Metrics"), plus ours.

All live on the default registry. Vector metrics are pre-created for the four syncer types so
that they appear as 0 from the start, as Typha does.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Summary, disable_created_metrics

from typha.model.keys import ALL_SYNCER_TYPES

# Typha exports no *_created series; neither do we.
disable_created_metrics()

_S = ["syncer"]

connections_accepted = Counter("typha_connections_accepted", "Connections accepted.")
connections_active = Gauge(
    "typha_connections_active", "Open connections, including those still handshaking."
)
connections_dropped = Counter(
    "typha_connections_dropped", "Connections dropped to rebalance or shed load."
)
connections_streaming = Gauge("typha_connections_streaming", "Connections past the handshake.", _S)
connections_grace_used = Counter(
    "typha_connections_grace_used", "Clients that needed the post-snapshot grace period.", _S
)
cache_size = Gauge("typha_cache_size", "KVs in the cache.", _S)
cache_tombstones = Gauge(
    "typha_cache_tombstones",
    "Deleted keys remembered for conflated catch-up (bounded by TombstoneRetentionSecs).",
    _S,
)
history_breadcrumbs = Gauge(
    "typha_history_breadcrumbs",
    "Breadcrumbs retained for resuming clients (bounded by ServerMaxFallBehindSecs and "
    "HistoryMaxUpdates).",
    _S,
)
updates_total = Counter("typha_updates_total", "Updates received from the datastore.", _S)
updates_skipped = Counter("typha_updates_skipped", "Updates dropped as no-ops.", _S)
breadcrumb_seq_number = Gauge(
    "typha_breadcrumb_seq_number", "Current breadcrumb sequence number.", _S
)
breadcrumb_block = Counter(
    "typha_breadcrumb_block", "Follower wake-ups that had to wait for a breadcrumb.", _S
)
breadcrumb_non_block = Counter(
    "typha_breadcrumb_non_block", "Follower wake-ups satisfied immediately.", _S
)
breadcrumb_size = Summary("typha_breadcrumb_size", "KVs per breadcrumb.", _S)
snapshots_generated = Counter("typha_snapshots_generated", "Snapshots built.", _S)
snapshots_reused = Counter(
    "typha_snapshots_reused", "Extra clients served from an existing snapshot.", _S
)
snapshot_raw_bytes = Gauge(
    "typha_snapshot_raw_bytes", "Size of the last snapshot before compression.", _S
)
snapshot_compressed_bytes = Gauge(
    "typha_snapshot_compressed_bytes", "Size of the last snapshot after compression.", _S
)
client_snapshot_send_secs = Summary(
    "typha_client_snapshot_send_secs", "Time to send the initial snapshot to a client.", _S
)
client_latency_secs = Summary(
    "typha_client_latency_secs", "How far behind the newest breadcrumb each write was.", _S
)
client_write_latency_secs = Summary(
    "typha_client_write_latency_secs", "Duration of each slow-path write.", _S
)
next_breadcrumb_latency_secs = Summary(
    "typha_next_breadcrumb_latency_secs", "Time to gather breadcrumbs while behind.", _S
)
ping_latency = Summary("typha_ping_latency", "Ping to pong round trip.", _S)
kvs_per_msg = Summary("typha_kvs_per_msg", "KVs per delta write.", _S)
logs_dropped = Counter("typha_logs_dropped", "Logs dropped because output blocked.")
log_errors = Counter("typha_log_errors", "Logging errors.")

# --- Our own features ------------------------------------------------------------------------
resumes_served = Counter(
    "typha_resumes_served", "Reconnecting clients resumed without a snapshot.", [*_S, "how"]
)
catchups_served = Counter(
    "typha_catchups_served", "Conflated catch-ups sent to clients that fell out of history.", _S
)
catchups_built = Counter(
    "typha_catchups_built",
    "Conflated catch-ups encoded (each is shared by every client it covers).",
    _S,
)
catchup_kvs_built = Counter(
    "typha_catchup_kvs_built", "KVs encoded into conflated catch-ups (the build work).", _S
)
catchups_refused = Counter(
    "typha_catchups_refused",
    "Resumes that could have had a conflated catch-up but got the shared snapshot instead "
    "(too many keys changed, or the catch-up build budget was spent).",
    _S,
)
fanout_direct_writes = Counter(
    "typha_fanout_direct_writes", "Delta writes done on the shared fast path.", _S
)
fanout_slow_wakeups = Counter(
    "typha_fanout_slow_wakeups", "Clients handed to their own writer (behind or busy).", _S
)
fanout_wait_secs = Summary(
    "typha_fanout_wait_secs",
    "Per KV: from its breadcrumb's birth to the start of the fan-out run that takes it (the "
    "coalescing window).",
    _S,
)
fanout_run_secs = Summary(
    "typha_fanout_run_secs", "Duration of each fan-out run over all caught-up clients.", _S
)
bytes_sent = Counter("typha_bytes_sent", "Bytes written to clients.", _S)
updates_skipped_by_reason = Counter(
    "typha_updates_skipped_by_reason", "Datastore changes that produced no update.", ["reason"]
)
warm_restart_loads = Counter("typha_warm_restart_loads", "Cache files loaded at start.", ["result"])
datastore_connected = Gauge("typha_datastore_connected", "1 while the datastore is reachable.")
unauthenticated_buffered_bytes = Gauge(
    "typha_unauthenticated_buffered_bytes",
    "Input bytes buffered by connections that have not completed their hello (all of them).",
)
gob_encodes = Counter(
    "typha_gob_encodes",
    "Breadcrumbs and snapshots encoded in Calico's gob protocol (once each, however many "
    "gob clients receive them).",
    ["what"],
)
connections_by_protocol = Counter(
    "typha_connections_by_protocol",
    "Connections by the protocol their first byte chose.",
    ["protocol"],
)
protocol_errors = Counter(
    "typha_protocol_errors", "Connections closed for breaking the protocol.", ["reason"]
)


def observe_many(summary: Any, value: float, times: int) -> None:
    """``summary.observe(value)`` ``times`` times, in O(1): the shared fan-out writes the same
    run to thousands of clients at once. (The Python client's summary is exactly a count and
    a sum, which is all observe updates; tests/test_metrics_fastpath.py checks they agree.)"""
    if times > 0:
        summary._count.inc(times)
        summary._sum.inc(value * times)


def precreate() -> None:
    for syncer in ALL_SYNCER_TYPES:
        s = str(syncer)
        for vec in (
            connections_streaming,
            connections_grace_used,
            cache_size,
            cache_tombstones,
            history_breadcrumbs,
            updates_total,
            updates_skipped,
            breadcrumb_seq_number,
            breadcrumb_block,
            breadcrumb_non_block,
            snapshots_generated,
            snapshots_reused,
            snapshot_raw_bytes,
            snapshot_compressed_bytes,
            catchups_served,
            catchups_built,
            catchup_kvs_built,
            catchups_refused,
            fanout_direct_writes,
            fanout_slow_wakeups,
            fanout_wait_secs,
            fanout_run_secs,
            bytes_sent,
        ):
            vec.labels(s)


precreate()


# The families Calico Typha exports (the README's table marks the others as ours).
CALICO_TYPHA_FAMILIES = frozenset(
    m._name  # type: ignore[attr-defined]
    for m in (
        connections_accepted,
        connections_active,
        connections_dropped,
        connections_streaming,
        connections_grace_used,
        cache_size,
        updates_total,
        updates_skipped,
        breadcrumb_seq_number,
        breadcrumb_block,
        breadcrumb_non_block,
        breadcrumb_size,
        snapshots_generated,
        snapshots_reused,
        snapshot_raw_bytes,
        snapshot_compressed_bytes,
        client_snapshot_send_secs,
        client_latency_secs,
        client_write_latency_secs,
        next_breadcrumb_latency_secs,
        ping_latency,
        kvs_per_msg,
        logs_dropped,
        log_errors,
    )
)


# --- Typha-compatible counter names ------------------------------------------------------------
# Go's client exposes Typha's counters under their bare names (``typha_connections_accepted``);
# the Python client always adds ``_total``. So that dashboards and alerts written for Calico
# Typha work unchanged, each such counter is also exposed under its bare name, as an untyped
# metric (the text format cannot type a counter without the suffix).
TYPHA_BARE_COUNTERS = (
    connections_accepted,
    connections_dropped,
    connections_grace_used,
    updates_skipped,
    breadcrumb_block,
    breadcrumb_non_block,
    snapshots_generated,
    snapshots_reused,
    logs_dropped,
    log_errors,
)


class _BareCounterNames:
    def describe(self) -> list[object]:
        # Nothing to reserve: these names belong to the counters themselves.
        return []

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.metrics_core import Metric

        for counter in TYPHA_BARE_COUNTERS:
            for family in counter.collect():
                bare = Metric(family.name, family.documentation, "unknown")
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        bare.add_sample(family.name, sample.labels, sample.value)
                yield bare


REGISTRY.register(_BareCounterNames())  # type: ignore[arg-type]
