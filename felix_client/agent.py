"""The node agent: Typha updates in, a programmed node out.

``NodeAgent`` is the ``SyncClient``'s callbacks object and runs the apply loop:

* ``on_updates`` / ``on_status`` only record (into the calculation engine and the metrics) and
  wake the loop, so the sync client is never held up by the dataplane.
* ``run`` waits for updates, debounces briefly (a snapshot arriving in many frames, or a burst of
  deltas, becomes one flush), calls ``engine.flush()`` and hands the delta to the backend.
  Nothing is applied before the first InSync, as Felix does, so a half-received snapshot never
  becomes a half-programmed policy set.
* The first apply is a full ``resync`` (it also clears leftovers of a previous run); later ones
  are incremental. A failed apply leaves the node somewhere between two states, so it is counted
  (``felix_int_dataplane_failures``) and retried — after exponential backoff — as a full resync
  of our own chains, sets and routes from the engine's current state, never by replaying the
  delta. A periodic resync (``resync_interval``) repairs drift, and routes waiting for a
  workload interface are retried every ``pending_retry_interval``.

Tests observe progress through ``received_seq`` (bumped by every callback), ``applied_seq`` (the
``received_seq`` the node reflects) and ``wait_applied()``.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from typing import Any

import structlog
import trio

from felix_client.calc.engine import CalcEngine
from felix_client.calc.state import DataplaneState
from felix_client.dataplane import (
    Dataplane,
    DataplaneError,
    DryRunDataplane,
    HostSpec,
    KernelDataplane,
    host_spec,
)
from felix_client.metrics import AgentMetrics
from typha.protocol import SyncStatus

log = structlog.get_logger(__name__)


def update_type(key: str) -> str:
    """A coarse kind for ``felix_calc_graph_updates_processed{type}`` (prefix tests only, so
    it is cheap enough to run on every received key)."""
    if key.startswith("/calico/v1/host/"):
        if "/workload/" in key:
            return "workload_endpoint"
        if "/endpoint/" in key:
            return "host_endpoint"
        if "/config/" in key:
            return "host_config"
        return "host"
    if key.startswith("/calico/v1/policy/"):
        if key.startswith("/calico/v1/policy/profile/"):
            return "profile"
        if key.endswith("/metadata"):
            return "tier"
        return "policy"
    if key.startswith("/calico/ipam/"):
        return "ipam_block"
    if key.startswith("/calico/v1/ipam/"):
        return "ip_pool"
    if key.startswith("/calico/v1/netset/"):
        return "network_set"
    if key.startswith("/calico/v1/config/"):
        return "global_config"
    if key.startswith("/calico/resources/"):
        return "resource"
    return "other"


class NodeAgent:
    """Keeps one node's dataplane in step with what its ``SyncClient`` receives."""

    def __init__(
        self,
        node: str,
        *,
        dry_run_dir: str | os.PathLike[str] | None = None,
        netns: str | None = None,
        dataplane: Dataplane | None = None,
        metrics_port: int = 9091,
        metrics_host: str = "127.0.0.1",
        debounce: float = 0.01,
        max_debounce: float = 0.25,
        retry_base: float = 0.1,
        retry_cap: float = 30.0,
        resync_interval: float | None = 90.0,
        pending_retry_interval: float = 0.5,
    ) -> None:
        """``dataplane`` wins over ``dry_run_dir``, which wins over ``netns`` (a kernel backend
        in that namespace; ``None`` means the agent's own namespace). ``metrics_port`` 0
        disables the metrics server, -1 picks a free port (see ``metrics_bound_port``)."""
        self.node = node
        self.engine = CalcEngine(node)
        if dataplane is None:
            if dry_run_dir is not None:
                dataplane = DryRunDataplane(dry_run_dir)
            else:
                dataplane = KernelDataplane(netns)
        self.dataplane: Dataplane = dataplane
        self.metrics = AgentMetrics(lambda: self.dataplane.stats)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics_bound_port: int | None = None
        self.debounce = debounce
        self.max_debounce = max_debounce
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.resync_interval = resync_interval
        self.pending_retry_interval = pending_retry_interval

        # Progress, for tests and status output.
        self.received_seq = 0
        self.applied_seq = 0
        self.last_apply_at: float | None = None  # trio.current_time() of the last success
        self.last_apply_wall: float | None = None  # time.time() of the same moment
        self.applies = 0
        self.resyncs = 0
        self.failures = 0
        self.last_error = ""
        self.last_apply_seconds = 0.0
        self.last_calc_seconds = 0.0
        self.state: DataplaneState | None = None  # what the node was last brought to
        self.host: HostSpec | None = None

        self._wake = trio.Event()
        self._applied = trio.Event()
        self._dirty = False  # updates received since the last flush
        self._update_types: Counter[str] = Counter()
        self._needs_resync = True  # the first apply reads and fixes the whole node
        self._initial_done = False
        self._retry_at: float | None = None
        self._consecutive_failures = 0
        self._next_resync: float = math.inf
        self._pending_delay = pending_retry_interval

    # --- SyncCallbacks ---------------------------------------------------------------------------

    def on_updates(self, updates: list[tuple[str, Any]]) -> None:
        self.engine.apply_updates(updates)
        types = self._update_types
        for key, _ in updates:
            types[update_type(key)] += 1
        self.received_seq += 1
        self._dirty = True
        self._wake.set()

    def on_status(self, status: SyncStatus) -> None:
        self.metrics.on_status(status)
        if status is SyncStatus.IN_SYNC and not self.engine.in_sync:
            self.engine.snapshot_done()
        # Even a status with nothing to flush must advance applied_seq, or wait_applied()
        # would wait for an apply that never comes.
        self._dirty = True
        self.received_seq += 1
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        return self.engine.in_sync

    @property
    def failing(self) -> bool:
        """The last apply failed and its retry has not succeeded yet."""
        return self._retry_at is not None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Apply until cancelled (then closes the backend and the metrics server)."""
        if self.metrics_port:
            port = 0 if self.metrics_port < 0 else self.metrics_port
            self.metrics_bound_port = self.metrics.serve(port, self.metrics_host)
        try:
            host_mtu = await self.dataplane.host_mtu()
            if host_mtu:
                self.engine.set_host_mtu(host_mtu)
            task_status.started()
            while True:
                reason = await self._wait_for_work()
                if reason == "pending":
                    await self._retry_pending()
                    continue
                if reason == "updates":
                    await self._debounce()
                elif reason == "resync":
                    self._needs_resync = True
                await self._sync_once()
        finally:
            with trio.CancelScope(shield=True):
                await self.dataplane.aclose()
                if self.metrics_bound_port is not None:
                    await trio.to_thread.run_sync(self.metrics.stop)
                    self.metrics_bound_port = None

    async def _wait_for_work(self) -> str:
        """Block until there is something to do; returns what: ``retry`` (a failed apply's
        backoff expired), ``updates``, ``resync`` (periodic) or ``pending`` (routes waiting
        for their interface)."""
        while True:
            now = trio.current_time()
            if self._retry_at is not None:
                # While failing, only the backoff timer matters: updates that arrive meanwhile
                # are folded into the resync the retry does.
                await trio.sleep_until(self._retry_at)
                return "retry"
            if self._dirty and self.engine.in_sync:
                return "updates"
            if now >= self._next_resync:
                return "resync"
            deadline = self._next_resync
            pending = self.engine.in_sync and self.dataplane.pending_work()
            if pending:
                deadline = min(deadline, now + self._pending_delay)
            self._wake = trio.Event()
            if self._dirty and self.engine.in_sync:
                continue
            with trio.move_on_at(deadline) as scope:
                await self._wake.wait()
            if scope.cancelled_caught and pending and trio.current_time() < self._next_resync:
                return "pending"

    async def _debounce(self) -> None:
        """Let a burst finish: wait until ``debounce`` passes without a new update (at most
        ``max_debounce`` in all)."""
        give_up = trio.current_time() + self.max_debounce
        while True:
            seen = self.received_seq
            await trio.sleep(self.debounce)
            if self.received_seq == seen or trio.current_time() >= give_up:
                return

    async def _sync_once(self) -> None:
        if not self.engine.in_sync:
            return
        seq = self.received_seq
        self._dirty = False
        if self._update_types:
            self.metrics.record_updates(self._update_types)
            self._update_types = Counter()
        started = time.perf_counter()
        delta = self.engine.flush()
        state = self.engine.state()
        host = host_spec(self.engine.model, self.node, self.engine.vxlan_mtu)
        self.last_calc_seconds = time.perf_counter() - started
        self.metrics.calc_update_time.observe(self.last_calc_seconds)
        self.metrics.record_delta(delta)
        self.metrics.record_calc_counts(self.engine.invalid_values, self.engine.calc_failures)
        full = self._needs_resync
        if not full and delta.empty and host == self.host:
            self._succeeded(seq, state, host)
            return
        started = time.perf_counter()
        try:
            if full:
                await self.dataplane.resync(state, host)
            else:
                await self.dataplane.apply(delta, state, host)
        except DataplaneError as exc:
            self._failed(exc, full)
            return
        elapsed = self.last_apply_seconds = time.perf_counter() - started
        if full:
            self.resyncs += 1
            if not self._initial_done:
                self._initial_done = True
                self.metrics.initial_resync_time.set(elapsed)
            if self.resync_interval:
                self._next_resync = trio.current_time() + self.resync_interval
        else:
            self.metrics.apply_time.observe(elapsed)
        self.applies += 1
        self._succeeded(seq, state, host)

    async def _retry_pending(self) -> None:
        try:
            await self.dataplane.retry_pending()
        except DataplaneError as exc:
            self._failed(exc, False)
            return
        # Something that stays unprogrammable (a gateway in another subnet) should not cost a
        # netlink pass every interval forever: back off, up to a couple of seconds.
        self._pending_delay = min(max(self.pending_retry_interval, 2.0), self._pending_delay * 2)
        if self.state is not None:
            self._record_state(self.state)

    def _succeeded(self, seq: int, state: DataplaneState, host: HostSpec) -> None:
        self._pending_delay = self.pending_retry_interval
        self._needs_resync = False
        self._retry_at = None
        self._consecutive_failures = 0
        self.state = state
        self.host = host
        self.applied_seq = seq
        self.last_apply_at = trio.current_time()
        self.last_apply_wall = time.time()
        self._record_state(state)
        self._applied.set()
        self._applied = trio.Event()

    def _failed(self, exc: DataplaneError, full: bool) -> None:
        self.failures += 1
        self.metrics.failures.inc()
        self.last_error = str(exc)
        self._needs_resync = True
        self._consecutive_failures += 1
        delay = min(self.retry_cap, self.retry_base * 2 ** (self._consecutive_failures - 1))
        self._retry_at = trio.current_time() + delay
        log.warning(
            "dataplane apply failed; will resync",
            node=self.node,
            full=full,
            retry_in=round(delay, 3),
            error=str(exc)[:500],
        )

    def _record_state(self, state: DataplaneState) -> None:
        model = self.engine.model
        cluster = {
            "hosts": len(set(model.nodes) | set(model.host_ips)),
            "workload_endpoints": len(model.weps),
            "host_endpoints": len(model.heps),
            "policies": len(model.policies),
            "profiles": len(model.profile_rules),
            "tiers": len(model.tiers),
        }
        pending = getattr(self.dataplane.stats, "routes_pending", 0)
        self.metrics.record_state(state, cluster, pending)

    # --- waiting (tests, tooling) ----------------------------------------------------------------

    async def wait_applied(self, seq: int | None = None, timeout: float = 10.0) -> None:
        """Wait until the node reflects everything received up to ``seq`` (default: now).

        Raises ``trio.TooSlowError`` after ``timeout`` seconds.
        """
        target = self.received_seq if seq is None else seq
        with trio.fail_after(timeout):
            while self.applied_seq < target or self.failing:
                await self._applied.wait()
