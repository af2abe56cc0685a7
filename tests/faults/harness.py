"""Shared machinery of the fault scenarios (docs/faults.md).

Every scenario has the same skeleton:

* a REAL etcd holding a few hundred CNI-style WorkloadEndpoints, churned at a fixed rate through
  ``typha.sync.etcd_writer`` (pods created, relabelled, deleted; every write stamps a label with
  the writer's wall clock, so a client can measure write → receipt latency);
* a Typha on that etcd (in-process, or ``typha serve`` subprocesses), optionally behind a real
  toxiproxy on the etcd leg (Typha → etcd) and/or the client leg (clients → Typha);
* ≥ 20 node clients (``felix_client.sync_client.SyncClient``, or ``load.lightclient`` in full
  mode for the 1,000-client case);
* a toxic (or a kill), then a convergence check: churn stops, etcd is read with one plain range
  read through the gateway (not through the code under test), every value is converted with
  ``convert_etcd_kv`` and the union of the non-None outputs (what a ``ResourceExpander`` would
  leave) is the expected Felix state. Every client must hold exactly that within 30 s; lost
  (in etcd, not in the client), ghost (in the client, not in etcd) and stale keys are counted
  explicitly and must all be 0.

Figures are printed as ``FIGURE <scenario>: ...`` lines (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio
from prometheus_client.parser import text_string_to_metric_families

from felix_client.sync_client import SyncClient
from load.lightclient import STAMP_LABEL, stamp_of
from tests.etcd_state import etcd_model_state
from tests.peers.etcd import EtcdServer
from tests.peers.ports import free_port, free_ports
from tests.peers.toxiproxy import ToxiproxyServer
from tests.typha_harness import make_config, run_typha
from typha.app import Typha
from typha.cache.feed import CacheFeed
from typha.model.keys import SyncerType, syncer_types_for
from typha.protocol import KVKind, KVs, SyncStatus
from typha.resources import workload_endpoint_for_pod
from typha.server.server import SyncServer
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import EtcdAccess, EtcdClient, EtcdError
from typha.sync.etcd_writer import apply_resources, delete_resources
from typha.sync.synthetic import synthetic_updates

NAMESPACE = "faults"
N_PODS = 300
CHURN_RATE = 25.0  # writes per second
CONVERGE_SECS = 30.0


# --- figures -------------------------------------------------------------------------------------


def figure(scenario: str, **values: Any) -> None:
    """One line of figures for docs/faults.md."""
    parts = []
    for k, v in values.items():
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}")
    print(f"\nFIGURE {scenario}: " + " ".join(parts), flush=True)


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f}ms"


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking peer call (toxiproxy REST, etcd kill/start) off the trio loop."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred``; return the seconds it took, fail with ``what`` after ``timeout``."""
    t0 = time.monotonic()
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
    assert pred(), f"timed out after {timeout:.0f}s waiting for {what}"
    return time.monotonic() - t0


# --- the churned resources -----------------------------------------------------------------------


def pod(i: int, version: int, stamp: float | None = None) -> dict[str, Any]:
    """The WorkloadEndpoint Calico's CNI plugin writes for pod ``i`` (labels carry a version and
    the writer's wall-clock stamp)."""
    labels = {"app": f"a{i % 5}", "ver": str(version)}
    if stamp is not None:
        labels[STAMP_LABEL] = f"{stamp:.6f}"
    ip = f"10.64.{(i // 256) % 256}.{i % 256}"
    return workload_endpoint_for_pod(f"node{i % 10}", NAMESPACE, f"pod-{i}", ip, labels)


class EtcdChurn:
    """Pods created, relabelled and deleted in a real etcd at a fixed rate.

    Writes go straight to etcd (never through a toxic). A failed write (etcd down) is counted
    and retried with the next tick; whether it was applied or not does not matter, because the
    expected state is always read back from etcd.
    """

    def __init__(self, url: str, *, n_pods: int = N_PODS, rate: float = CHURN_RATE, seed: int = 1):
        self.url = url
        self.n_pods = n_pods
        self.rate = rate
        self.rng = random.Random(seed)
        self.live: dict[int, int] = {}  # pod index -> version
        self.next_index = 0
        self.writes = 0
        self.failures = 0
        self.ops = {"create": 0, "relabel": 0, "delete": 0}
        self._stop = trio.Event()
        self.done = trio.Event()

    async def populate(self) -> int | None:
        async with EtcdClient([self.url]) as client:
            resources = [pod(i, 0) for i in range(self.n_pods)]
            rev = await apply_resources(client, resources)
        self.live = dict.fromkeys(range(self.n_pods), 0)
        self.next_index = self.n_pods
        return rev

    def _pick(self) -> tuple[str, int]:
        r = self.rng.random()
        n = len(self.live)
        if n < 0.9 * self.n_pods or (r < 0.2 and n < 1.1 * self.n_pods):
            dead = [i for i in range(self.next_index) if i not in self.live]
            if dead and self.rng.random() < 0.5:
                return "create", self.rng.choice(dead)
            self.next_index += 1
            return "create", self.next_index - 1
        i = self.rng.choice(list(self.live))
        return ("delete", i) if r < 0.4 else ("relabel", i)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write until :meth:`halt` (may be started again after a halt)."""
        period = 1.0 / self.rate
        self._stop, self.done = trio.Event(), trio.Event()
        async with EtcdClient([self.url], request_timeout=5.0, connect_timeout=2.0) as client:
            task_status.started()
            next_t = trio.current_time()
            try:
                while not self._stop.is_set():
                    op, i = self._pick()
                    try:
                        if op == "delete":
                            await delete_resources(client, [pod(i, 0)])
                            self.live.pop(i, None)
                        else:
                            version = self.live.get(i, -1) + 1
                            await apply_resources(client, [pod(i, version, time.time())])
                            self.live[i] = version
                        self.writes += 1
                        self.ops[op] += 1
                    except EtcdError:
                        self.failures += 1
                    next_t += period
                    now = trio.current_time()
                    if next_t < now - 1.0:  # far behind (etcd was down): do not burst
                        next_t = now
                    await trio.sleep_until(next_t)
            finally:
                self.done.set()

    async def halt(self) -> None:
        """Stop writing and wait for the write in flight."""
        self._stop.set()
        with trio.fail_after(15):
            await self.done.wait()


# --- the expected state --------------------------------------------------------------------------


def normalise(value: Any) -> Any:
    """What a value looks like after the wire (msgpack arrays decode as lists)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def etcd_felix_state(etcd: EtcdServer) -> tuple[dict[str, Any], int]:
    """(Felix model state, revision) from ONE plain range read of /calico/ via the gateway,
    plus what Typha itself adds on etcd, stored nowhere (the default-allow profile)."""
    everything, revision = etcd_model_state(etcd)
    state = {
        k: normalise(v) for k, v in everything.items() if SyncerType.FELIX in syncer_types_for(k)
    }
    for u in synthetic_updates():
        if SyncerType.FELIX in syncer_types_for(u.key):
            state[u.key] = normalise(u.value)
    return state, revision


@dataclass
class Convergence:
    seconds: float
    keys: int
    clients: int
    lost: int
    ghost: int
    stale: int
    worst: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.clients} clients x {self.keys} keys in {self.seconds:.2f}s: "
            f"lost={self.lost} ghost={self.ghost} stale={self.stale}"
        )


def diff_state(state: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[int, int, int]:
    lost = sum(1 for k in expected if k not in state)
    ghost = sum(1 for k in state if k not in expected)
    stale = sum(1 for k, v in state.items() if k in expected and v != expected[k])
    return lost, ghost, stale


async def converge(
    clients: Sequence[Any],
    expected: Mapping[str, Any],
    *,
    timeout: float = CONVERGE_SECS,
    select: Callable[[str], bool] | None = None,
) -> Convergence:
    """Wait (≤ ``timeout``) until every client's state equals ``expected``; count the rest.

    ``select`` restricts the comparison to some keys (a shared apiserver holds other tests'
    objects too)."""

    # Keys Typha adds that no datastore stores (the default-allow profile): the app adds them,
    # the in-process feed of some scenarios does not, so neither side's copy is compared.
    synthetic = {u.key for u in synthetic_updates()}
    expected = {k: v for k, v in expected.items() if k not in synthetic}

    def view(c: Any) -> Mapping[str, Any]:
        return {
            k: v for k, v in c.state.items() if k not in synthetic and (select is None or select(k))
        }

    def done() -> bool:
        if select is None and any(
            len(c.state) - len(synthetic & c.state.keys()) != len(expected) for c in clients
        ):
            return False  # cheap pre-check
        return all(view(c) == expected for c in clients)

    t0 = time.monotonic()
    with trio.move_on_after(timeout):
        while not done():
            await trio.sleep(0.05)
    secs = time.monotonic() - t0
    lost = ghost = stale = 0
    worst = []
    for c in clients:
        lo, gh, st = diff_state(view(c), expected)
        lost, ghost, stale = lost + lo, ghost + gh, stale + st
        if lo or gh or st:
            worst.append(f"{getattr(c, 'node', '?')}: lost={lo} ghost={gh} stale={st}")
    return Convergence(secs, len(expected), len(clients), lost, ghost, stale, worst[:5])


def assert_exact(conv: Convergence, timeout: float = CONVERGE_SECS) -> None:
    assert (conv.lost, conv.ghost, conv.stale) == (0, 0, 0), f"not converged: {conv} {conv.worst}"
    assert conv.seconds < timeout, str(conv)


async def converge_to_etcd(
    clients: Sequence[Any], etcd: EtcdServer, *, timeout: float = CONVERGE_SECS
) -> Convergence:
    expected, _ = await blocking(etcd_felix_state, etcd)
    assert len(expected) > 100, "the scenario lost its data set"
    conv = await converge(clients, expected, timeout=timeout)
    assert_exact(conv, timeout)
    return conv


# --- clients -------------------------------------------------------------------------------------


class StatusLog:
    """SyncClient callbacks that remember every SyncStatus the client was sent."""

    def __init__(self) -> None:
        self.statuses: list[SyncStatus] = []

    def on_updates(self, updates: list[tuple[str, Any]]) -> None:
        pass

    def on_status(self, status: SyncStatus) -> None:
        self.statuses.append(status)


class LatencyProbe:
    """Write → receipt latency of stamped delta KVs, over all attached clients."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (writer stamp, latency s)

    def attach(self, client: SyncClient) -> None:
        samples = self.samples

        def on_kvs(msg: KVs) -> None:
            if msg.kind is not KVKind.DELTA:
                return
            now = time.time()
            for _, value in msg.kvs:
                stamp = stamp_of(value)
                if stamp is not None:
                    samples.append((stamp, now - stamp))

        client.on_kvs = on_kvs

    def between(self, t0: float, t1: float) -> list[float]:
        return [lat for stamp, lat in self.samples if t0 <= stamp < t1]

    def summary(self, t0: float, t1: float) -> LatencyStats:
        return LatencyStats.of(self.between(t0, t1))


@dataclass
class LatencyStats:
    n: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> LatencyStats:
        v = sorted(values)
        if not v:
            return cls(0, None, None)
        return cls(len(v), statistics.median(v), v[min(len(v) - 1, int(0.95 * len(v)))])

    def __str__(self) -> str:
        return f"p50={ms(self.p50)} p95={ms(self.p95)} (n={self.n})"


def status_log(c: SyncClient) -> list[SyncStatus]:
    assert isinstance(c.callbacks, StatusLog)
    return c.callbacks.statuses


async def start_clients(
    nursery: trio.Nursery,
    addresses: Sequence[str],
    n: int,
    *,
    prefix: str = "node",
    probe: LatencyProbe | None = None,
    timeout: float = 60.0,
    **kwargs: Any,
) -> list[SyncClient]:
    kwargs.setdefault("backoff_cap", 1.0)
    clients = [
        SyncClient(list(addresses), f"{prefix}-{i}", callbacks=StatusLog(), **kwargs)
        for i in range(n)
    ]
    for c in clients:
        if probe is not None:
            probe.attach(c)
        nursery.start_soon(c.run)
    await wait_until(lambda: all(c.in_sync.is_set() for c in clients), timeout, "clients in sync")
    return clients


def total(clients: Iterable[SyncClient], stat: str) -> int:
    return sum(getattr(c.stats, stat) for c in clients)


def stats_of(clients: Sequence[SyncClient]) -> dict[str, int]:
    return {
        s: total(clients, s)
        for s in (
            "connects",
            "disconnects",
            "snapshots",
            "resumes",
            "catchups",
            "goodbyes",
            "read_timeouts",
            "protocol_errors",
        )
    }


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


# --- one etcd scenario ---------------------------------------------------------------------------


@dataclass
class Scenario:
    etcd: EtcdServer
    churn: EtcdChurn
    feed: CacheFeed
    server: SyncServer
    datastore: EtcdDatastore
    clients: list[SyncClient]
    probe: LatencyProbe
    nursery: trio.Nursery
    toxi: ToxiproxyServer | None
    client_proxy: str | None
    etcd_proxy: str | None
    address: str  # where the clients connect (Typha, or the client-leg proxy)
    app: Typha | None = None  # with app=True: the full Typha (health endpoints)

    async def add_toxic(self, proxy: str | None, type: str, **kwargs: Any) -> str:
        assert self.toxi is not None and proxy is not None
        toxic = await blocking(self.toxi.client.add_toxic, proxy, type, **kwargs)
        return str(toxic["name"])

    async def remove_toxic(self, proxy: str | None, name: str) -> None:
        assert self.toxi is not None and proxy is not None
        await blocking(self.toxi.client.remove_toxic, proxy, name)

    async def window(self, secs: float) -> tuple[float, float]:
        """Let churn run ``secs``; returns the wall-clock window its stamps fall in."""
        t0 = time.time()
        await trio.sleep(secs)
        return t0, time.time()

    async def baseline(self, secs: float) -> tuple[float, float]:
        """A window without faults; its last 0.5 s is left out of the latency figures, as those
        writes may still be in flight when the next toxic goes on."""
        t0, t1 = await self.window(secs)
        return t0, max(t0, t1 - 0.5)

    def stats(self) -> dict[str, int]:
        return stats_of(self.clients)

    async def readiness(self) -> int:
        """HTTP status of Typha's /readiness (app mode)."""
        assert self.app is not None and self.app.health_port
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            r = await http.get(f"http://127.0.0.1:{self.app.health_port}/readiness")
        return r.status_code

    async def finish(self) -> Convergence:
        """Stop the churn and check every client against etcd."""
        await self.churn.halt()
        return await converge_to_etcd(self.clients, self.etcd)


@contextlib.asynccontextmanager
async def etcd_scenario(
    etcd: EtcdServer,
    toxi: ToxiproxyServer | None = None,
    *,
    client_leg: bool = False,
    etcd_leg: bool = False,
    app: bool = False,
    n_clients: int = 24,
    n_pods: int = N_PODS,
    rate: float = CHURN_RATE,
    client_kwargs: Mapping[str, Any] | None = None,
    ds_kwargs: Mapping[str, Any] | None = None,
    cfg: Mapping[str, Any] | None = None,
) -> AsyncIterator[Scenario]:
    """etcd (populated) → [toxiproxy] → in-process Typha → [toxiproxy] → clients, churn running.

    ``app=True`` runs the whole ``typha.app.Typha`` (health endpoints on a random port) instead
    of just the feed and the sync server."""
    churn = EtcdChurn(etcd.client_url, n_pods=n_pods, rate=rate)
    await churn.populate()
    etcd_url = etcd.client_url
    etcd_proxy = None
    if etcd_leg:
        assert toxi is not None
        p = await blocking(toxi.client.create_proxy, "etcd", etcd.endpoint)
        etcd_proxy, etcd_url = p.name, f"http://{p.listen}"
    kw: dict[str, Any] = {
        "backoff_cap": 1.0,
        "access": EtcdAccess(request_timeout=10.0, connect_timeout=3.0),
    }
    kw.update(ds_kwargs or {})
    ds = EtcdDatastore([etcd_url], **kw)
    overrides: dict[str, Any] = {"ServerPingIntervalSecs": 1}
    if app:
        overrides.update(HealthEnabled=True, HealthHost="127.0.0.1", HealthPort=-1)
    overrides.update(cfg or {})
    config = make_config(**overrides)
    async with contextlib.AsyncExitStack() as stack:
        full: Typha | None = None
        if app:
            full = Typha(config, ds)
            outer = await stack.enter_async_context(trio.open_nursery())
            port = await outer.start(full.run)
            stack.callback(outer.cancel_scope.cancel)
            feed, server, typha_address = full.feed, full.server, f"127.0.0.1:{port}"
            await wait_until(lambda: feed.in_sync, 30, "Typha in sync")
        else:
            running = await stack.enter_async_context(run_typha(ds, config))
            feed, server, typha_address = running.feed, running.server, running.address
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        address = typha_address
        client_proxy = None
        if client_leg:
            assert toxi is not None
            p = await blocking(toxi.client.create_proxy, "typha", typha_address)
            client_proxy, address = p.name, p.listen
        await nursery.start(churn.run)
        probe = LatencyProbe()
        clients = await start_clients(
            nursery, [address], n_clients, probe=probe, **(client_kwargs or {})
        )
        yield Scenario(
            etcd,
            churn,
            feed,
            server,
            ds,
            clients,
            probe,
            nursery,
            toxi,
            client_proxy,
            etcd_proxy,
            address,
            full,
        )


# --- Typha as a real process ---------------------------------------------------------------------


class TyphaProcess:
    """``python -m typha.cli serve`` on random loopback ports, configured through TYPHA_* env,
    with health and Prometheus metrics enabled."""

    def __init__(
        self,
        name: str,
        log_dir: Path,
        *,
        env: Mapping[str, str],
        port: int | None = None,
    ):
        self.name = name
        self.port = port or free_port()
        self.health_port, self.metrics_port = free_ports(2)
        self.log_path = log_dir / f"typha-{name}.log"
        self.env = {
            **os.environ,
            "TYPHA_SERVERHOST": "127.0.0.1",
            "TYPHA_SERVERPORT": str(self.port),
            "TYPHA_HEALTHENABLED": "true",
            "TYPHA_HEALTHHOST": "127.0.0.1",
            "TYPHA_HEALTHPORT": str(self.health_port),
            "TYPHA_PROMETHEUSMETRICSENABLED": "true",
            "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "TYPHA_PROMETHEUSMETRICSPORT": str(self.metrics_port),
            "TYPHA_LOGFILEPATH": "none",
            "TYPHA_LOGSEVERITYSCREEN": "INFO",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TyphaProcess:
        assert self.proc is None or self.proc.poll() is not None
        self.reap()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "typha.cli", "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def get(self, port: int, path: str) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            return await http.get(f"http://127.0.0.1:{port}{path}")

    async def wait_ready(self, timeout: float = 60.0) -> float:
        t0 = time.monotonic()
        with trio.move_on_after(timeout):
            while True:
                assert self.running, f"typha {self.name} exited:\n{self.log_tail()}"
                with contextlib.suppress(httpx.HTTPError, OSError):
                    if (await self.get(self.health_port, "/readiness")).status_code == 200:
                        return time.monotonic() - t0
                await trio.sleep(0.1)
        raise AssertionError(f"typha {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    async def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics (0 if absent)."""
        text = (await self.get(self.metrics_port, "/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    return float(sample.value)
        return 0.0

    async def snapshots_generated(self) -> float:
        return await self.metric("typha_snapshots_generated_total", syncer="felix")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        proc = self.proc
        return int(await trio.to_thread.run_sync(functools.partial(proc.wait, timeout)))

    def reap(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"
