"""Metrics shared by the datastores (etcd v3 and Kubernetes), registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Summary

datastore_invalid_values = Counter(
    "typha_datastore_invalid_values_total",
    "Datastore values that could not be decoded or converted (treated as deletions).",
)

datastore_probe_failures = Counter(
    "typha_datastore_probe_failures_total",
    "Bounded datastore probes that failed or timed out (a hung datastore); each drops the "
    "watch, which then resumes from its revision.",
)

datastore_convert_secs = Summary(
    "typha_datastore_convert_secs",
    "Per update: from its watch response (decoded) to the batch handed to the cache (the "
    "conversion, plus any other task that ran at its checkpoints).",
)

__all__ = ["datastore_convert_secs", "datastore_invalid_values", "datastore_probe_failures"]
