"""EtcdDatastore against a real etcd (random loopback ports, throw-away data dirs; no mocks).

Every test checks the datastore's view against an *independent* read: a plain range read of
etcd through the test harness (not EtcdClient), converted with ``convert_etcd_kv``. The
datastore's events go to ``ReferenceSink``, a tiny re-implementation of the cache semantics:
``ResyncStarted`` begins tracking, ``Updates`` apply, ``ResyncFinished`` deletes every key not
seen since ``ResyncStarted``. Negative checks have positive controls next to them.

These tests pin the JSON gateway (``EtcdAPI=gateway``): gRPC is the default, and
tests/sync/test_etcd_grpc_datastore.py and test_etcd_grpc_tls_auth.py re-run them with it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

from tests.etcd_state import etcd_model_state
from tests.peers.etcd import EtcdServer, EtcdTLS, find_etcd
from tests.peers.plugin import EtcdFactory
from tests.peers.ports import LOOPBACK, free_port
from tests.sync.test_etcd_client import progress_notify_args
from typha.app import etcd_settings
from typha.config import load_config
from typha.sync.base import (
    ConnectionStatus,
    DatastoreEvent,
    ResyncFinished,
    ResyncStarted,
    Updates,
)
from typha.sync.convert import (
    convert_etcd_kv,
    etcd_key_for,
    workload_endpoint_name,
)
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_client import DeleteOp, EtcdClient, PutOp
from typha.sync.etcd_writer import apply_resources, batch_ops, delete_resources

V3 = "projectcalico.org/v3"
BLOCK_KEY = "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
HANDLE_KEY = "/calico/ipam/v2/handle/k8s-pod-network.abc"  # in the watched range, not for Felix
FELIX_STATUS_KEY = "/calico/felix/v2/no-region/host/node1/status"  # outside the range


class _GatewayDatastore(EtcdDatastore):
    """The datastore these tests build: the gateway unless a test asks otherwise (a datastore
    made from the configuration takes its EtcdAPI, the default grpc unless set)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("api", "gateway")
        super().__init__(*args, **kwargs)


@pytest.fixture(autouse=True)
def gateway_datastores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only for the tests collected in this module (the gRPC modules that borrow them patch
    ``EtcdDatastore`` their own way)."""
    monkeypatch.setattr(f"{__name__}.EtcdDatastore", _GatewayDatastore)


# --- resources ----------------------------------------------------------------------------------


def wep(i: int, *, label: str = "a") -> dict[str, Any]:
    node, pod = f"node{i % 50}", f"pod-{i}"
    return {
        "apiVersion": V3,
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": workload_endpoint_name(node, "k8s", pod, "eth0"),
            "namespace": f"ns{i % 10}",
            "labels": {"app": f"{label}{i % 7}"},
        },
        "spec": {
            "orchestrator": "k8s",
            "node": node,
            "pod": pod,
            "endpoint": "eth0",
            "interfaceName": f"cali{i:011d}",
            "ipNetworks": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"],
            "profiles": [f"kns.ns{i % 10}"],
        },
    }


def node(name: str, tunnel: str | None = "10.0.0.1") -> dict[str, Any]:
    """A Node: with a tunnel address it produces 3 model keys, without one 2."""
    bgp: dict[str, Any] = {"ipv4Address": "192.168.0.1/24"}
    if tunnel:
        bgp["ipv4IPIPTunnelAddr"] = tunnel
    return {"apiVersion": V3, "kind": "Node", "metadata": {"name": name}, "spec": {"bgp": bgp}}


def gnp(name: str, order: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": V3,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"selector": "all()", "order": order, "ingress": [{"action": "Allow"}]},
    }


def block_value(cidr: str = "10.65.0.0/26") -> bytes:
    return json.dumps(
        {"cidr": cidr, "affinity": "host:node1", "allocations": [None] * 64, "unallocated": []}
    ).encode()


def model_keys(resource: dict[str, Any]) -> set[str]:
    from typha.sync.convert import etcd_value_for

    key = etcd_key_for(resource)
    return {u.key for u in convert_etcd_kv(key, etcd_value_for(resource)) if u.value is not None}


# --- the reference sink --------------------------------------------------------------------------


class ReferenceSink:
    """Applies datastore events with the cache's semantics and records them.

    Asserts the invariants a cache relies on: revisions never go backwards, Updates carry an
    int revision, resync batches stay within the batch size.
    """

    def __init__(self, state: dict[str, Any] | None = None, *, max_resync_batch: int = 1000):
        self.events: list[DatastoreEvent] = []
        self.state: dict[str, Any] = dict(state or {})
        self.revision: int | None = None
        self.connected: bool | None = None
        self.in_resync = False
        self.finished_resyncs = 0
        self.caught_up = 0
        self._seen: set[str] = set()
        self._max_resync_batch = max_resync_batch
        self._changed = trio.Event()
        self.gate: trio.Event | None = None
        """When set, ``send`` blocks until the event fires (a stalled consumer)."""
        self.blocked = trio.Event()

    async def send(self, event: DatastoreEvent) -> None:
        if self.gate is not None:
            self.blocked.set()
            await self.gate.wait()
        self.events.append(event)
        match event:
            case ResyncStarted():
                self.in_resync = True
                self._seen = set()
            case Updates(updates=updates, revision=revision):
                assert isinstance(revision, int), revision
                if self.revision is not None:
                    assert revision >= self.revision, (revision, self.revision)
                if self.in_resync:
                    assert len(updates) <= self._max_resync_batch
                for u in updates:
                    if self.in_resync:
                        self._seen.add(u.key)
                    if u.value is None:
                        self.state.pop(u.key, None)
                    else:
                        self.state[u.key] = u.value
                self.revision = revision
            case ResyncFinished(revision=revision) if not self.in_resync:
                # A warm start that has caught up: nothing to diff (typha/sync/base.py).
                assert isinstance(revision, int)
                self.caught_up += 1
                self.revision = revision
            case ResyncFinished(revision=revision):
                assert isinstance(revision, int)
                for key in [k for k in self.state if k not in self._seen]:
                    del self.state[key]
                self.in_resync = False
                self.finished_resyncs += 1
                if self.revision is not None:
                    assert revision >= self.revision
                self.revision = revision
            case ConnectionStatus(connected=connected):
                self.connected = connected
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = 60.0
    ) -> None:
        try:
            with trio.fail_after(timeout):
                while not predicate():
                    await self._changed.wait()
        except trio.TooSlowError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def wait_synced_at(self, revision: int, timeout: float = 60.0) -> None:
        await self.wait_for(
            lambda: (
                self.finished_resyncs > 0
                and not self.in_resync
                and self.revision is not None
                and self.revision >= revision
            ),
            f"in sync at revision >= {revision} (now {self.revision})",
            timeout,
        )

    def of_type(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def statuses(self) -> list[bool]:
        return [e.connected for e in self.of_type(ConnectionStatus)]


# --- independent view of etcd --------------------------------------------------------------------


async def assert_converged(sink: ReferenceSink, etcd: EtcdServer, timeout: float = 60.0) -> int:
    """Wait until the sink reached etcd's current revision; its state must equal etcd's."""
    expected, revision = await trio.to_thread.run_sync(etcd_model_state, etcd)
    await sink.wait_synced_at(revision, timeout)
    missing = expected.keys() - sink.state.keys()
    ghosts = sink.state.keys() - expected.keys()
    assert not missing, f"lost keys: {sorted(missing)[:5]} (+{len(missing)})"
    assert not ghosts, f"ghost keys: {sorted(ghosts)[:5]} (+{len(ghosts)})"
    differing = [k for k in expected if expected[k] != sink.state[k]]
    assert not differing, f"stale values: {differing[:5]}"
    return revision


@contextlib.asynccontextmanager
async def running(ds: EtcdDatastore, sink: ReferenceSink, **run_kwargs: Any) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(ds.run, sink, **run_kwargs))
        yield
        nursery.cancel_scope.cancel()


def datastore_for(etcd: EtcdServer, **kwargs: Any) -> EtcdDatastore:
    kwargs.setdefault("backoff_cap", 1.0)  # keep fault tests short; the default is 5 s
    return EtcdDatastore([etcd.client_url], **kwargs)


def invalid_counter() -> float:
    return REGISTRY.get_sample_value("typha_datastore_invalid_values_total") or 0.0


# --- tests ----------------------------------------------------------------------------------------


async def test_list_then_watch_20k_keys(etcd_server: EtcdServer) -> None:
    total = 20_000
    async with EtcdClient([etcd_server.client_url]) as client:
        await apply_resources(client, [wep(i) for i in range(total)])
        await apply_resources(client, [node("node1"), gnp("default.p1")])
        await client.put(BLOCK_KEY, block_value())
        await client.put(HANDLE_KEY, b'{"block": {}}')
        await client.put(FELIX_STATUS_KEY, b'{"time": "now"}')

        sink = ReferenceSink()
        ds = datastore_for(etcd_server)
        async with running(ds, sink):
            t0 = time.perf_counter()
            await sink.wait_for(lambda: sink.finished_resyncs == 1, "initial list")
            list_secs = time.perf_counter() - t0
            revision = await assert_converged(sink, etcd_server)
            assert len(sink.state) == total + 4  # 20k WEPs, node (2 keys), GNP, block
            assert BLOCK_KEY in sink.state and HANDLE_KEY not in sink.state

            # Churn through the watch: modify, delete, add, in 128-op txns.
            t0 = time.perf_counter()
            await apply_resources(client, [wep(i, label="b") for i in range(0, 3000)])
            await delete_resources(client, [wep(i) for i in range(3000, 6000)])
            await apply_resources(client, [wep(i) for i in range(total, total + 3000)])
            await apply_resources(client, [node("node1", tunnel=None)])  # drops a model key
            await client.delete(BLOCK_KEY)
            await assert_converged(sink, etcd_server)
            churn_secs = time.perf_counter() - t0

        assert len(sink.of_type(ResyncStarted)) == 1  # no relist while watching
        assert sink.of_type(ResyncFinished)[0].revision <= revision
        assert sink.statuses() == [True]
        assert "/calico/v1/host/node1/config/IpInIpTunnelAddr" not in sink.state
        assert "/calico/resources/v3/projectcalico.org/nodes/node1" in sink.state
        watch_updates = sink.events[sink.events.index(sink.of_type(ResyncFinished)[0]) :]
        n_updates = sum(len(e.updates) for e in watch_updates if isinstance(e, Updates))
        assert n_updates >= 9000
        print(
            f"\ndatastore: initial list+convert of {total + 4} keys {list_secs:.2f}s; "
            f"watch churn of 9,002 changes applied in {churn_secs:.2f}s (incl. writing them)"
        )


async def test_compaction_in_the_middle_of_a_stream(etcd_factory: EtcdFactory) -> None:
    """A stalled consumer falls behind, etcd compacts, the watch is cancelled with
    compact_revision: the datastore must relist, with no lost and no ghost key."""
    etcd = etcd_factory(tmpfs=True)
    filler = "/calico/ipam/v2/handle/filler"  # in the watched range, filtered client-side
    async with EtcdClient([etcd.client_url]) as client:
        await apply_resources(client, [wep(i) for i in range(300)] + [node("node1")])
        sink = ReferenceSink()
        ds = datastore_for(etcd)
        async with running(ds, sink):
            await assert_converged(sink, etcd)
            # Stall the consumer on the next watch message.
            sink.gate = trio.Event()
            await client.put(filler, b"x")
            with trio.fail_after(10):
                await sink.blocked.wait()
            # Fill the server's per-watcher channel and the socket buffers (~150 responses
            # of 200 kB fit) so that etcd parks the watcher as a slow "victim" ...
            big = b"f" * 200_000
            for _ in range(250):
                await client.put(filler, big)
            # ... then the changes the stalled watcher will never get as events ...
            await delete_resources(client, [wep(i) for i in range(0, 100)])  # ghost candidates
            await apply_resources(client, [wep(i) for i in range(300, 400)])  # lost candidates
            await apply_resources(client, [wep(i, label="z") for i in range(100, 200)])
            await apply_resources(client, [node("node1", tunnel=None)])
            await client.delete(filler)
            # ... and compact them away.
            revision = await client.revision()
            await client.compact(revision)
            sink.gate.set()
            sink.gate = None
            await assert_converged(sink, etcd)
        starts = sink.of_type(ResyncStarted)
        assert [s.reason for s in starts] == ["initial", "compacted"]
        assert ds.resyncs == 2
        assert "/calico/v1/host/node1/config/IpInIpTunnelAddr" not in sink.state


@pytest.mark.parametrize("compact_during_outage", [False, True])
async def test_sigkill_and_restart(etcd_server: EtcdServer, compact_during_outage: bool) -> None:
    """SIGKILL etcd: ConnectionStatus(False), then (True) after the restart, and convergence.

    While the datastore cannot reach it, etcd comes back on another port and changes happen.
    Without compaction the datastore resumes its watch from the last revision + 1 and gets them
    as events, with no relist. The positive control compacts during the outage: the resumed
    watch is refused and the datastore must relist."""
    etcd = etcd_server
    async with EtcdClient([etcd.client_url]) as client:
        await apply_resources(client, [wep(i) for i in range(200)] + [node("node1")])
    sink = ReferenceSink()
    ds = datastore_for(etcd)
    async with running(ds, sink):
        await assert_converged(sink, etcd)
        watches = ds.watches_started
        await trio.to_thread.run_sync(etcd.kill)
        await sink.wait_for(lambda: sink.connected is False, "ConnectionStatus(False)")

        # Outage, as the datastore sees it: etcd runs on a port it does not know.
        real_port = etcd.client_port
        etcd.client_port = free_port()
        await trio.to_thread.run_sync(etcd.start)
        async with EtcdClient([etcd.client_url]) as client:
            await delete_resources(client, [wep(i) for i in range(50)])
            await apply_resources(client, [wep(i) for i in range(200, 260)])
            await apply_resources(client, [wep(i, label="q") for i in range(50, 100)])
            await apply_resources(client, [node("node1", tunnel=None)])
            if compact_during_outage:
                await client.compact(await client.revision())
        assert sink.connected is False  # it really could not see any of that
        await trio.to_thread.run_sync(etcd.stop)
        etcd.client_port = real_port
        await trio.to_thread.run_sync(etcd.start)

        await sink.wait_for(lambda: sink.connected is True, "ConnectionStatus(True)")
        await assert_converged(sink, etcd)
    assert sink.statuses() == [True, False, True]
    assert ds.watches_started > watches
    reasons = [s.reason for s in sink.of_type(ResyncStarted)]
    if compact_during_outage:
        assert reasons == ["initial", "compacted"]
    else:
        assert reasons == ["initial"]  # resumed by revision: no relist
    assert "/calico/v1/host/node1/config/IpInIpTunnelAddr" not in sink.state


async def test_invalid_values_become_deletions(etcd_server: EtcdServer) -> None:
    good = [wep(i) for i in range(10)]
    bad_resource = wep(100)
    bad_resource["spec"]["ipNetworks"] = ["10.0.0.1/24"]  # host bits set: InvalidResource
    bad_key = etcd_key_for(wep(101))
    array_key = etcd_key_for(wep(102))
    async with EtcdClient([etcd_server.client_url]) as client:
        await apply_resources(client, good)
        await client.put(etcd_key_for(bad_resource), json.dumps(bad_resource).encode())
        await client.put(bad_key, b"{not json")
        await client.put(array_key, b"[1, 2]")
        before = invalid_counter()
        sink = ReferenceSink()
        ds = datastore_for(etcd_server)
        async with running(ds, sink):
            await assert_converged(sink, etcd_server)
            assert ds.invalid_values == 3
            assert invalid_counter() - before == 3
            # Positive control: every good key arrived; the bad ones produced nothing.
            assert set(sink.state) == set().union(*(model_keys(r) for r in good))

            # Watch path: corrupting a good key deletes what it produced.
            victim = good[3]
            victim_keys = model_keys(victim)
            assert victim_keys <= sink.state.keys()
            await client.put(etcd_key_for(victim), b"\xff\xfe not utf-8 json")
            await sink.wait_for(lambda: not victim_keys & sink.state.keys(), "victim deleted")
            assert ds.invalid_values == 4
            assert invalid_counter() - before == 4
            deletions = [
                u
                for e in sink.of_type(Updates)
                for u in e.updates
                if u.key in victim_keys and u.value is None
            ]
            assert len(deletions) == len(victim_keys)
            # ... and valid JSON that is not a valid resource does the same to another key.
            victim2 = good[4]
            broken = json.loads(json.dumps(victim2))
            broken["spec"]["ipNetworks"] = ["not-an-ip"]
            await client.put(etcd_key_for(victim2), json.dumps(broken).encode())
            await sink.wait_for(
                lambda: not model_keys(victim2) & sink.state.keys(), "victim2 deleted"
            )
            assert ds.invalid_values == 5
            # Positive control: fixing the value brings the keys back.
            await apply_resources(client, [victim, victim2])
            await assert_converged(sink, etcd_server)
            assert victim_keys <= sink.state.keys()
            assert ds.invalid_values == 5
        assert len(sink.of_type(ResyncStarted)) == 1


async def test_tls_and_password_auth_from_config(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    tls = EtcdTLS.generate(tmp_path)  # client cert without CN: required with password auth
    etcd = etcd_factory(tls=tls)
    etcd.enable_auth("typha", "pw")
    async with EtcdClient(
        [etcd.client_url],
        ca_file=tls.ca_file,
        cert_file=tls.client_cert_file,
        key_file=tls.client_key_file,
        username="typha",
        password="pw",
    ) as client:
        await apply_resources(client, [wep(i) for i in range(20)])
    cfg = load_config(
        environ={},
        overrides={
            "EtcdAddr": etcd.endpoint,
            "EtcdScheme": "https",
            "EtcdCaFile": tls.ca_file,
            "EtcdCertFile": tls.client_cert_file,
            "EtcdKeyFile": tls.client_key_file,
            "EtcdUsername": "typha",
            "EtcdPassword": "pw",
            "EtcdAPI": "gateway",  # tests/sync/test_etcd_grpc_tls_auth.py: the same with grpc
        },
    )
    ds = EtcdDatastore.from_settings(etcd_settings(cfg), backoff_cap=0.5)
    assert ds.endpoints == [f"https://{etcd.endpoint}"]
    sink = ReferenceSink()
    async with running(ds, sink):
        await assert_converged(sink, etcd)
        async with ds.make_client() as client:  # the watch works with auth too
            await apply_resources(client, [wep(i) for i in range(20, 30)])
        await assert_converged(sink, etcd)
    assert len(sink.state) == 30
    assert sink.statuses() == [True]

    # Negative: a wrong password keeps it disconnected and never starts a resync.
    wrong = cfg.replace(etcd_password="wrong")
    ds = EtcdDatastore.from_settings(etcd_settings(wrong), backoff_cap=0.5)
    sink = ReferenceSink()
    async with running(ds, sink):
        await sink.wait_for(lambda: sink.connected is False, "ConnectionStatus(False)")
        await trio.sleep(1.0)
    assert sink.of_type(ResyncStarted) == []
    assert "authentication failed" in sink.of_type(ConnectionStatus)[0].detail


async def test_warm_start_from_revision(etcd_server: EtcdServer) -> None:
    etcd = etcd_server
    async with EtcdClient([etcd.client_url]) as client:
        await apply_resources(client, [wep(i) for i in range(100)] + [node("node1"), gnp("p")])
        first = ReferenceSink()
        async with running(datastore_for(etcd), first):
            saved_revision = await assert_converged(first, etcd)
        saved_state = dict(first.state)

        # Changes while no datastore runs, including ones that shrink or delete what a
        # resource produced (the restarted expander has never seen those resources).
        await delete_resources(client, [wep(i) for i in range(10)] + [gnp("p")])
        await apply_resources(client, [wep(i) for i in range(100, 120)])
        await apply_resources(client, [node("node1", tunnel=None)])

        # Warm start: the cache still holds saved_state; watch from saved_revision + 1.
        warm = ReferenceSink(saved_state)
        warm.finished_resyncs = 1  # it was in sync when saved
        warm.revision = saved_revision
        ds = datastore_for(etcd)
        async with running(ds, warm, start_revision=saved_revision):
            await assert_converged(warm, etcd)
            await warm.wait_for(lambda: warm.caught_up == 1, "warm start caught up")
        assert warm.of_type(ResyncStarted) == []  # no list
        assert ds.resyncs == 0
        assert "/calico/v1/host/node1/config/IpInIpTunnelAddr" not in warm.state
        assert "/calico/v1/policy/GlobalNetworkPolicy//p" not in warm.state

        # Positive control: once the saved revision is compacted away, the warm start
        # falls back to a full resync, which still converges.
        await apply_resources(client, [wep(i) for i in range(120, 130)])
        await client.compact(await client.revision())
        stale = ReferenceSink(saved_state)
        stale.finished_resyncs = 1
        stale.revision = saved_revision
        async with running(datastore_for(etcd), stale, start_revision=saved_revision):
            await assert_converged(stale, etcd)
        assert [s.reason for s in stale.of_type(ResyncStarted)] == ["compacted"]


async def test_progress_notifications_advance_the_revision(etcd_factory: EtcdFactory) -> None:
    etcd = etcd_factory(extra_args=progress_notify_args(find_etcd() or "etcd"))
    async with EtcdClient([etcd.client_url]) as client:
        await apply_resources(client, [wep(1)])
        sink = ReferenceSink()
        async with running(datastore_for(etcd), sink):
            listed = await assert_converged(sink, etcd)
            # Writes outside the watched range advance etcd's revision silently...
            outside = await client.put(FELIX_STATUS_KEY, b"{}")
            assert outside > listed
            await sink.wait_synced_at(outside, timeout=15)
            # ... and arrive as empty Updates carrying the notified revision.
            progress = [e for e in sink.of_type(Updates) if e.revision >= outside]
            assert progress and all(e.updates == [] for e in progress)
            # Positive control: a change in range arrives as an update.
            rev = (await apply_resources(client, [wep(2)])) or 0
            await sink.wait_synced_at(rev)
            assert model_keys(wep(2)) <= sink.state.keys()


async def test_unreachable_at_start_then_available(etcd_server: EtcdServer) -> None:
    etcd = etcd_server
    async with EtcdClient([etcd.client_url]) as client:
        await apply_resources(client, [wep(i) for i in range(5)])
    await trio.to_thread.run_sync(etcd.kill)
    sink = ReferenceSink()
    ds = datastore_for(etcd, backoff_cap=0.5)
    async with running(ds, sink):
        await sink.wait_for(lambda: sink.connected is False, "ConnectionStatus(False)")
        await trio.sleep(1.0)
        assert sink.of_type(ResyncStarted) == []  # an outage is not a resync
        assert "EtcdUnavailable" in sink.of_type(ConnectionStatus)[0].detail
        await trio.to_thread.run_sync(etcd.start)
        await assert_converged(sink, etcd)  # positive control
    assert sink.statuses() == [False, True]

    # A dead first endpoint is skipped without ever reporting a disconnection.
    sink = ReferenceSink()
    ds = EtcdDatastore([f"http://{LOOPBACK}:{free_port()}", etcd.client_url])
    async with running(ds, sink):
        await assert_converged(sink, etcd)
    assert sink.statuses() == [True]


async def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    ds = EtcdDatastore(["http://127.0.0.1:1"], backoff_base=0.1, backoff_cap=5.0)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (30, 5.0)]:
        delays = [ds._backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered


def test_settings_endpoints() -> None:
    def endpoints(**env: str) -> list[str]:
        cfg = load_config(environ={f"TYPHA_{k.upper()}": v for k, v in env.items()})
        return EtcdDatastore.from_settings(etcd_settings(cfg)).endpoints

    assert endpoints() == ["http://127.0.0.1:2379"]
    assert endpoints(EtcdAddr="10.0.0.5:2379", EtcdScheme="https") == ["https://10.0.0.5:2379"]
    # EtcdEndpoints overrides addr/scheme; entries without a scheme take EtcdScheme.
    assert endpoints(
        EtcdEndpoints="https://a:2379, b:2379 ,", EtcdAddr="ignored:1", EtcdScheme="https"
    ) == ["https://a:2379", "https://b:2379"]
    cfg = load_config(environ={"TYPHA_ETCDUSERNAME": "u", "TYPHA_ETCDPASSWORD": "p"})
    assert EtcdDatastore.from_settings(etcd_settings(cfg)).access.username == "u"
    assert endpoints(EtcdEndpoints="http://x:1") == ["http://x:1"]


async def test_writer_batches_within_etcd_limits(etcd_server: EtcdServer) -> None:
    resources = [wep(i) for i in range(300)]
    resources += [wep(299, label="last-wins")]  # same key again: must not share a txn
    batches = list(batch_ops(PutOp(etcd_key_for(r), b"x") for r in resources))
    assert [len(b) for b in batches] == [128, 128, 44, 1]
    big = list(batch_ops(PutOp(f"/k{i}", b"v" * 300_000) for i in range(10)))
    assert [len(b) for b in big] == [2, 2, 2, 2, 2]
    assert list(batch_ops([DeleteOp("/a"), DeleteOp("/b")])) == [[DeleteOp("/a"), DeleteOp("/b")]]

    async with EtcdClient([etcd_server.client_url]) as client:
        before = await client.revision()
        last = await apply_resources(client, resources)
        assert last == before + 4  # one revision per txn
        stored = json.loads(etcd_server.get(etcd_key_for(wep(299))) or b"{}")
        assert stored["metadata"]["labels"]["app"] == "last-wins5"
        state, _ = etcd_model_state(etcd_server)
        assert len(state) == 300
        await delete_resources(client, resources[:250])
        state, _ = etcd_model_state(etcd_server)
        assert len(state) == 50  # positive control: the other 50 are still there
        assert await apply_resources(client, []) is None
