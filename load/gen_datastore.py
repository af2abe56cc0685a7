"""A synthetic datastore for benchmarks: N WorkloadEndpoints, then updates at a fixed rate.

Implements :class:`typha.sync.base.Datastore`. The initial list holds ``n_endpoints`` model
KVs under real WorkloadEndpoint keys (``typha.model.keys.workload_endpoint_key``) with values
shaped like the converter's output (``typha.sync.convert.endpoints``). Then, at ``rate``
updates per second, endpoints are rewritten round-robin, each value stamped with the wall-clock
time the update was *due* (``value["annotations"]["stamp"]``, a decimal string because model
annotations are ``{str: str}``; clients accept floats too).

Batching: every ``batch_secs`` (5 ms by default) the updates that fell due since the previous
batch are emitted as one ``Updates`` event with a new revision, as an etcd watch response
carries several events. Stamps are the due times, not the emission time, so the batching delay
and any scheduling lag of this generator count in the measured latency (an open-loop generator:
if it falls behind, the updates it owes are emitted late and show up as latency, never
silently dropped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from typha.model.keys import workload_endpoint_key
from typha.sync.base import (
    ConnectionStatus,
    EventSink,
    ResyncFinished,
    ResyncStarted,
    Update,
    Updates,
)

LIST_CHUNK = 1000


def endpoint_key(i: int, nodes: int) -> str:
    return workload_endpoint_key(f"node-{i % nodes:05d}", "k8s", f"ns-{i % 50}/pod-{i}", "eth0")


def endpoint_value(i: int, version: int, stamp: float, pad: int = 0) -> dict[str, Any]:
    """A WorkloadEndpoint model value (the converter's field names), ~400 bytes packed."""
    ns = f"ns-{i % 50}"
    value: dict[str, Any] = {
        "state": "active",
        "name": f"cali{i:011x}",
        "active_instance_id": f"{i:016x}{version:08x}",
        "mac": f"ee:ee:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:"
        f"{i & 255:02x}",
        "profile_ids": [f"kns.{ns}", f"ksa.{ns}.default"],
        "ipv4_nets": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"],
        "ipv6_nets": [],
        "ipv4_nat": [],
        "ipv6_nat": [],
        "labels": {
            "app": f"app-{i % 97}",
            "pod-template-hash": f"{(i * 2654435761) & 0xFFFFFFFF:08x}",
            "projectcalico.org/namespace": ns,
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "default",
            "version": str(version),
        },
        "ipv4_gateway": None,
        "ipv6_gateway": None,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "generate_name": f"app-{i % 97}-",
        "allow_spoofed_source_ips": [],
        "annotations": {"stamp": f"{stamp:.6f}"},
    }
    if pad:
        value["annotations"]["pad"] = "x" * pad
    return value


@dataclass
class GenStats:
    written: int = 0  # updates emitted after the initial list
    batches: int = 0
    max_batch: int = 0
    max_lag_secs: float = 0.0  # how late a batch was emitted versus its schedule
    started_wall: float = 0.0


@dataclass
class GenDatastore:
    """The generator. ``set_rate`` may be called from any task of the same trio run."""

    n_endpoints: int
    rate: float = 0.0
    batch_secs: float = 0.005
    nodes: int = 500
    pad: int = 0
    name: str = "gen"
    revision: int = field(default=1, init=False)
    stats: GenStats = field(default_factory=GenStats, init=False)
    _versions: list[int] = field(default_factory=list, init=False)
    _next: int = field(default=0, init=False)
    _rate_changed: trio.Event = field(default_factory=trio.Event, init=False)
    _anchor: float = field(default=0.0, init=False)
    _anchor_issued: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._versions = [0] * self.n_endpoints
        # The generator runs inside Typha's process and its CPU counts as Typha's: keys are
        # built once and values copied from a per-endpoint template, so that it costs ~2 µs
        # per update instead of ~25 µs.
        self._keys = [endpoint_key(i, self.nodes) for i in range(self.n_endpoints)]
        self._templates: dict[int, dict[str, Any]] = {}  # made on first update (RSS)

    def set_rate(self, rate: float) -> None:
        """Change the rate; the schedule restarts now (no burst to 'catch up' the old rate)."""
        self.rate = max(0.0, float(rate))
        self._anchor = trio.current_time()
        self._anchor_issued = self.stats.written
        event, self._rate_changed = self._rate_changed, trio.Event()
        event.set()

    def initial(self) -> Iterator[Update]:
        now = time.time()
        for i in range(self.n_endpoints):
            yield Update(self._keys[i], endpoint_value(i, 0, now, self.pad))

    def _value(self, i: int, version: int, stamp: float) -> dict[str, Any]:
        """``endpoint_value(i, version, stamp)``, cheaply, from a template."""
        tpl = self._templates.get(i)
        if tpl is None:
            tpl = self._templates[i] = endpoint_value(i, 0, 0.0, self.pad)
        value = dict(tpl)
        labels = dict(tpl["labels"])
        labels["version"] = str(version)
        value["labels"] = labels
        value["active_instance_id"] = f"{i:016x}{version:08x}"
        annotations = dict(tpl["annotations"])
        annotations["stamp"] = f"{stamp:.6f}"
        value["annotations"] = annotations
        return value

    def _make_updates(self, n: int, first_due: float, step: float) -> list[Update]:
        """``n`` updates due at ``first_due + k*step`` (monotonic), stamped in wall time."""
        if not self.n_endpoints:
            return []
        offset = time.time() - trio.current_time()  # monotonic → wall
        out = []
        versions = self._versions
        for k in range(n):
            i = self._next
            self._next = (i + 1) % self.n_endpoints
            versions[i] += 1
            due = first_due + k * step + offset
            out.append(Update(self._keys[i], self._value(i, versions[i], due)))
        return out

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None:
        await sink.send(ConnectionStatus(True))
        await sink.send(ResyncStarted("initial"))
        batch: list[Update] = []
        for upd in self.initial():
            batch.append(upd)
            if len(batch) >= LIST_CHUNK:
                await sink.send(Updates(batch, self.revision))
                batch = []
        if batch:
            await sink.send(Updates(batch, self.revision))
        await sink.send(ResyncFinished(self.revision))
        self.stats.started_wall = time.time()
        self._anchor = trio.current_time()
        self._anchor_issued = 0
        while True:
            if self.rate <= 0:
                await self._rate_changed.wait()
                continue
            await trio.sleep(self.batch_secs)
            now = trio.current_time()
            rate = self.rate
            due_total = math.floor((now - self._anchor) * rate)
            n = due_total - (self.stats.written - self._anchor_issued)
            if n <= 0:
                continue
            first_due = self._anchor + (self.stats.written - self._anchor_issued + 1) / rate
            self.stats.max_lag_secs = max(self.stats.max_lag_secs, now - first_due)
            updates = self._make_updates(n, first_due, 1.0 / rate)
            self.revision += 1
            self.stats.written += n
            self.stats.batches += 1
            self.stats.max_batch = max(self.stats.max_batch, n)
            await sink.send(Updates(updates, self.revision))
