"""Metrics shared by the datastores (etcd v3 and Kubernetes), registered once per process."""

from __future__ import annotations

from prometheus_client import Counter

datastore_invalid_values = Counter(
    "typha_datastore_invalid_values_total",
    "Datastore values that could not be decoded or converted (treated as deletions).",
)

datastore_probe_failures = Counter(
    "typha_datastore_probe_failures_total",
    "Bounded datastore probes that failed or timed out (a hung datastore); each drops the "
    "watch, which then resumes from its revision.",
)

__all__ = ["datastore_invalid_values", "datastore_probe_failures"]
