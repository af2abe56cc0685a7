"""Calico's gob protocol from the real server, beside msgpack on the same port: Calico's own
syncclient (tests/go/gobcheck) against typha-py on loopback, on a real etcd."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.tlsutil import TLSFiles
from tests.typha_harness import make_config, run_typha
from typha import metrics
from typha.k8s.client import KubeClient, resource_path
from typha.k8s.kubeconfig import KubeConfig
from typha.model.keys import ALL_SYNCER_TYPES, SyncerType, workload_endpoint_key
from typha.server.gob_connection import GobConnection
from typha.sync.base import Update
from typha.sync.convert import etcd_key_for, etcd_value_for
from typha.sync.etcd import EtcdDatastore
from typha.sync.kubernetes import KubernetesDatastore
from typha.sync.memory import MemoryDatastore

from .gobclient import GoClient, require_gobcheck

V3 = "projectcalico.org/v3"


def wep(i: int, label: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": V3,
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": f"node1-k8s-pod{i}-eth0",
            "namespace": "ns1",
            "labels": {"app": label},
        },
        "spec": {
            "orchestrator": "k8s",
            "node": "node1",
            "pod": f"pod{i}",
            "endpoint": "eth0",
            "interfaceName": f"cali{i:011d}",
            "ipNetworks": [f"10.65.0.{i}/32"],
            "profiles": ["kns.ns1"],
        },
    }


RESOURCES: list[dict[str, Any]] = [
    {
        "apiVersion": V3,
        "kind": "Node",
        "metadata": {"name": "node1"},
        "spec": {"bgp": {"ipv4Address": "192.168.0.1/24", "ipv4IPIPTunnelAddr": "10.65.0.1"}},
    },
    {
        "apiVersion": V3,
        "kind": "IPPool",
        "metadata": {"name": "pool1"},
        "spec": {"cidr": "10.65.0.0/16", "ipipMode": "Always", "natOutgoing": True},
    },
    {
        "apiVersion": V3,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "allow-all"},
        "spec": {
            "selector": "app == 'a' && has(app)",
            "order": 1,
            "ingress": [{"action": "Allow"}],
        },
    },
    {
        "apiVersion": V3,
        "kind": "CalicoNodeStatus",
        "metadata": {"name": "node1-status"},
        "spec": {"node": "node1", "classes": ["Agent"], "updatePeriodSeconds": 10},
    },
    wep(1),
    wep(2),
]


def put(etcd: EtcdServer, resource: dict[str, Any]) -> int:
    return etcd.put(etcd_key_for(resource), json.dumps(etcd_value_for(resource)))


def mod_revisions(etcd: EtcdServer) -> dict[str, int]:
    """etcd's own view: mod_revision of every key under /calico/."""
    import base64

    reply = etcd.call(
        "/v3/kv/range",
        {
            "key": base64.b64encode(b"/calico/").decode(),
            "range_end": base64.b64encode(b"/calico0").decode(),
        },
    )
    return {
        base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"]) for kv in reply.get("kvs", [])
    }


@pytest.mark.parametrize("plain", [False, True], ids=["snappy", "plain"])
async def test_calico_client_syncs_every_syncer_from_etcd_and_follows_deltas(
    etcd_server: EtcdServer, plain: bool
) -> None:
    require_gobcheck()
    for r in RESOURCES:
        put(etcd_server, r)
    revs = mod_revisions(etcd_server)
    ds = EtcdDatastore([etcd_server.client_url])
    async with run_typha(ds) as typha:
        clients = {s: GoClient(typha.address, str(s), plain=plain) for s in ALL_SYNCER_TYPES}
        try:
            for syncer, client in clients.items():
                view = typha.feed.views[syncer]
                await client.wait_for(lambda c=client: c.in_sync, f"{syncer} in sync")
                # Exactly the view's keys, each new, each with the mod_revision of the etcd
                # key it came from (one etcd key may give several model keys).
                got = client.state()
                assert set(got) == set(view.state), syncer
                assert {u["updateType"] for u in got.values()} <= {1}
                assert {u["revision"] for u in got.values()} <= {str(r) for r in revs.values()}
            felix = clients[SyncerType.FELIX]
            assert len(felix.state()) >= 5
            wep_key = next(k for k in felix.state() if "/workload/" in k and k.endswith("eth0"))
            assert felix.state()[wep_key]["revision"] in {
                str(revs[etcd_key_for(wep(1))]),
                str(revs[etcd_key_for(wep(2))]),
            }
            for c in clients.values():
                assert c.state(), f"{c} got nothing"  # every syncer has content (positive)
            # v3 resources on etcd: the revision is the etcd mod_revision, and the
            # V3ResourceVersion empty, as from Calico Typha (its etcd v3 objects carry none),
            # so Calico's client puts no resourceVersion into the object.
            node_key = "/calico/resources/v3/projectcalico.org/nodes/node1"
            node_upd = clients[SyncerType.BGP].state()[node_key]
            node_rev = str(revs[etcd_key_for(RESOURCES[0])])
            assert node_upd["revision"] == node_rev
            assert "resourceVersion" not in json.loads(node_upd["value"])["metadata"]
            # Deltas: create, update, delete, each with its update type and etcd revision.
            n = len(felix.updates)
            rev_new = put(etcd_server, wep(3))
            rev_upd = put(etcd_server, wep(3, label="b"))
            rev_del = etcd_server.delete(etcd_key_for(wep(3)))
            await felix.wait_for(lambda: len(felix.updates) >= n + 3, "three deltas")
            deltas = [u for u in felix.updates[n:] if "pod3" in u["key"]]
            assert [(u["updateType"], u["revision"]) for u in deltas] == [
                (1, str(rev_new)),
                (2, str(rev_upd)),
                (3, str(rev_del)),
            ]
            assert json.loads(deltas[0]["value"])["labels"]["app"] == "a"
            assert json.loads(deltas[1]["value"])["labels"]["app"] == "b"
            assert deltas[2]["value"] is None
        finally:
            for c in clients.values():
                c.close()


def _wep_kv(i: int, label: str = "a") -> tuple[str, dict[str, Any]]:
    key = f"/calico/v1/host/node1/workload/k8s/ns1%2fpod{i}/endpoint/eth0"
    return key, {
        "state": "active",
        "name": f"cali{i:011d}",
        "mac": None,
        "profile_ids": ["kns.ns1"],
        "ipv4_nets": [f"10.65.0.{i}/32"],
        "ipv6_nets": [],
        "labels": {"app": label},
    }


async def test_msgpack_and_gob_clients_share_the_port_and_the_updates() -> None:
    require_gobcheck()
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(20)))
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        ours = SyncClient([typha.address], "node-msgpack")
        nursery.start_soon(ours.run)
        gob_plain = GoClient(typha.address, "felix", plain=True)
        gob_snappy = GoClient(typha.address, "felix")
        try:
            for c in (gob_plain, gob_snappy):
                await c.wait_for(lambda c=c: c.in_sync and len(c.state()) == 20, "snapshot")
            with trio.fail_after(10):
                await ours.in_sync.wait()
            key, value = _wep_kv(100, "z")
            ds.set(key, value)
            for c in (gob_plain, gob_snappy):
                await c.wait_for(lambda c=c: key in c.state(), "the new key")
                assert json.loads(c.state()[key]["value"])["labels"] == {"app": "z"}
            with trio.fail_after(10):
                while key not in ours.state:
                    await trio.sleep(0.02)
            assert ours.state[key]["labels"] == {"app": "z"}
            status = typha.server.status()
            compressions = sorted(str(c["compression"]) for c in status["clients"])
            assert compressions == ["None", "snappy", "zstd"]
        finally:
            gob_plain.close()
            gob_snappy.close()
            nursery.cancel_scope.cancel()


def _raw_gob(port: int, data: bytes) -> bytes:
    """Send ``data`` as a gob client would and return everything the server wrote until it
    closed the connection (or 5 s passed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            return out + b"<timeout>"
        return out


async def test_hellos_typha_refuses_close_without_a_server_hello() -> None:
    """Unknown syncer, no modern policy keys, a first message that is not a hello: closed
    without ServerHello — beside the same hello with good fields, which is answered."""
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerHandshakeTimeoutSecs=3)) as typha:
        enc = _golike()
        good = await trio.to_thread.run_sync(_raw_gob_until_hello, typha.port, enc.good)
        assert b"MsgServerHello" in good
        for bad in (enc.unknown_syncer, enc.no_modern_keys, enc.pong_first):
            answer = await trio.to_thread.run_sync(_raw_gob, typha.port, bad)
            assert b"MsgServerHello" not in answer and b"<timeout>" not in answer, answer[:80]


class _Hellos:
    def __init__(
        self, good: bytes, unknown_syncer: bytes, no_modern_keys: bytes, pong_first: bytes
    ):
        self.good = good
        self.unknown_syncer = unknown_syncer
        self.no_modern_keys = no_modern_keys
        self.pong_first = pong_first


def _golike() -> _Hellos:
    from tests.protocol.gob.golike import GoLikeClientEncoder
    from typha.protocol.gob import ClientHello, Pong

    def hello(**kw: Any) -> bytes:
        fields: dict[str, Any] = dict(
            hostname="n1", syncer_type="felix", supports_modern_policy_keys=True
        )
        fields.update(kw)
        return GoLikeClientEncoder().encode(ClientHello(**fields))

    return _Hellos(
        good=hello(),
        unknown_syncer=hello(syncer_type="bogus"),
        no_modern_keys=hello(supports_modern_policy_keys=False),
        pong_first=GoLikeClientEncoder().encode(Pong()),
    )


def _raw_gob_until_hello(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while b"MsgServerHello" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


async def _forward(listener: trio.SocketListener, target: list[int]) -> None:
    """A TCP forwarder standing for a Service: each new connection goes to ``target[0]``."""

    async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await dst.send_eof()

    async def serve(client: trio.SocketStream) -> None:
        try:
            backend = await trio.open_tcp_stream("127.0.0.1", target[0])
        except OSError:
            await client.aclose()
            return
        async with client, backend, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, backend)
            nursery.start_soon(pump, backend, client)

    await trio.serve_listeners(serve, [listener])


async def test_drain_closes_gob_connections_and_calicos_client_reconnects() -> None:
    """Behind a Service (a forwarder here): draining one Typha closes its gob connection (no
    Goodbye in gob), and Calico's restart-aware client reconnects and syncs from the other."""
    require_gobcheck(restart=True)
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(5)))
    cfg = make_config(ShutdownTimeoutSecs=1)
    async with (
        run_typha(ds, cfg) as first,
        run_typha(ds, make_config()) as second,
        trio.open_nursery() as nursery,
    ):
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        target = [first.port]
        nursery.start_soon(_forward, listener, target)
        service = f"127.0.0.1:{listener.socket.getsockname()[1]}"
        client = GoClient(service, "felix", restart=True)
        try:
            await client.wait_for(lambda: client.in_sync, "in sync")
            assert len(first.server.connections) == 1 and not second.server.connections
            target[0] = second.port
            n = len(client.statuses)
            nursery.start_soon(first.server.drain)
            await client.wait_for(lambda: any(e.get("restarted") for e in client.events), "restart")
            assert first.server.connections == {}
            await client.wait_for(
                lambda: len(client.statuses) > n + 1 and client.in_sync, "in sync again"
            )
            assert len(second.server.connections) == 1
            assert len(client.state()) == 5
        finally:
            client.close()
            nursery.cancel_scope.cancel()


def _gob_encodes(what: str) -> float:
    return metrics.gob_encodes.labels(what)._value.get()


async def test_each_breadcrumb_is_gob_encoded_once_for_many_clients(monkeypatch: Any) -> None:
    """Six of Calico's clients (three snappy, three plain) follow 30 updates: the gob encodes
    equal the breadcrumbs (not breadcrumbs x clients), the snapshot is encoded once, and the
    fan-out writes one and the same bytes object to every caught-up client of a codec."""
    require_gobcheck()
    written: list[tuple[int, str, bytes]] = []  # (connection, codec, data) per fast write
    runs: dict[int, int] = {}  # id(data) -> breadcrumbs in it
    original = GobConnection.try_fast_write

    def spy(self: GobConnection, first: int, last: int, data: bytes) -> int:
        written.append((self.info.conn_id, self.codec.key, data))
        runs[id(data)] = last - first + 1
        return original(self, first, last, data)

    monkeypatch.setattr(GobConnection, "try_fast_write", spy)
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(50)))
    async with run_typha(ds) as typha:
        view = typha.feed.views[SyncerType.FELIX]
        snapshots_before = _gob_encodes("snapshot")
        clients = [GoClient(typha.address, "felix", plain=i % 2 == 1) for i in range(6)]
        try:
            for c in clients:
                await c.wait_for(lambda c=c: c.in_sync and len(c.state()) == 50, "snapshot")
            assert _gob_encodes("snapshot") - snapshots_before == 1
            crumbs_before, encodes_before = view.head_seq, _gob_encodes("breadcrumb")
            for i in range(30):
                ds.set(*_wep_kv(i, f"v{i}"))
                # Bursts of three: one fan-out run joins several breadcrumbs.
                if i % 3 == 2:
                    await trio.sleep(0.05)
            for c in clients:
                await c.wait_for(
                    lambda c=c: (
                        json.loads(c.state()[_wep_kv(29)[0]]["value"])["labels"] == {"app": "v29"}
                    ),
                    "the last update",
                )
            crumbs = view.head_seq - crumbs_before
            assert crumbs >= 10  # the updates were spread over many breadcrumbs
            assert _gob_encodes("breadcrumb") - encodes_before == crumbs
        finally:
            for c in clients:
                c.close()
    by_data: dict[int, set[tuple[int, str]]] = {}
    for conn, key, data in written:
        by_data.setdefault(id(data), set()).add((conn, key))
    # ... and no buffer crossed codecs: snappy and plain clients get different bytes.
    assert all(len({key for _, key in conns}) == 1 for conns in by_data.values())
    for codec in ("gob", "gob+snappy"):
        shared = [
            data_id
            for data_id, c in by_data.items()
            if len(c) == 3 and next(iter(c))[1] == codec and runs[data_id] > 1
        ]
        assert shared, f"no run of breadcrumbs was written to all three {codec} connections"


TYPHA_CLIENT = Path("/opt/typha-peers/bin/typha-client")


async def _typha_client_log(args: list[str], until: str, timeout: float = 15) -> str:
    """Run Calico's typha-client until its log shows ``until`` (or it exits / times out)."""
    proc = await trio.lowlevel.open_process(
        [str(TYPHA_CLIENT), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = b""
    assert proc.stdout is not None
    with trio.move_on_after(timeout):
        while until.encode() not in out:
            chunk = await proc.stdout.receive_some(65536)
            if not chunk:
                break
            out += chunk
    proc.kill()
    await proc.wait()
    await proc.stdout.aclose()
    return out.decode(errors="replace")


@pytest.mark.skipif(not TYPHA_CLIENT.exists(), reason="typha-client not built (build-peers.sh)")
async def test_calicos_typha_client_over_mtls_with_cn_check(tmp_path: Path) -> None:
    """Calico's typha-client syncs over TLS with the right client CN (its log shows the
    updates and in-sync); with a wrong CN the server refuses it."""
    tls = TLSFiles(tmp_path)
    cert, key = tls.issue("server", cn="typha-server")
    cfg = make_config(
        ServerCertFile=cert,
        ServerKeyFile=key,
        CAFile=tls.ca_file,
        ClientCN="calico-node",
        ServerHandshakeTimeoutSecs=3,
    )
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(7)))
    async with run_typha(ds, cfg) as typha:

        def args(cn: str) -> list[str]:
            c, k = tls.issue(cn.replace(" ", "-"), cn=cn)
            return [
                f"--server={typha.address}",
                "--type=felix",
                f"--cert-file={c}",
                f"--key-file={k}",
                f"--ca-file={tls.ca_file}",
                "--server-cn=typha-server",
                "--server-uri=",  # typha-client panics when a TLS option is left out
            ]

        good = await _typha_client_log(args("calico-node"), "in-sync")
        assert "total=7" in good and "in-sync" in good, good[-2000:]

        # Two TLS clients follow 13 updates through their own writers (TLS never takes the
        # fast path): the same cached bytes per breadcrumb, so still one encode per crumb.
        view = typha.feed.views[SyncerType.FELIX]
        crumbs_before, encodes_before = view.head_seq, _gob_encodes("breadcrumb")

        async def write_later() -> None:
            await trio.sleep(1.0)
            for i in range(12):
                ds.set(*_wep_kv(100 + i))
                await trio.sleep(0.02)
            # typha-client logs its total at most once a second: one more, later, shows it.
            await trio.sleep(1.1)
            ds.set(*_wep_kv(112))

        logs: list[str] = []

        async def follow() -> None:
            logs.append(await _typha_client_log(args("calico-node"), "total=20", timeout=20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            nursery.start_soon(follow)
            nursery.start_soon(write_later)
        assert all("total=20" in log for log in logs), "\n=====\n".join(x[-3000:] for x in logs)
        crumbs = view.head_seq - crumbs_before
        assert crumbs >= 4
        assert _gob_encodes("breadcrumb") - encodes_before == crumbs
        bad = await _typha_client_log(args("intruder"), "in-sync", timeout=6)
        assert "total=" not in bad and "in-sync" not in bad, bad[-2000:]
        # It got through TCP and TLS to the server, which then hung up on it.
        assert "Connected to Typha" in bad and "Client failed" in bad, bad[-2000:]


def _stalled_gob(port: int, declared: int, sent: int) -> socket.socket:
    """A gob client that declares a message of ``declared`` bytes, sends ``sent`` of them and
    stalls (the slowloris shape)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\xfd" + declared.to_bytes(3, "big") + b"\x00" * sent)
    return s


def _closed_by_server(s: socket.socket, wait: float = 3.0) -> bool:
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_unauthenticated_gob_input_counts_against_the_server_budget() -> None:
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerHandshakeTimeoutSecs=20)) as typha:
        budget = typha.server.context.input_budget
        budget.limit = 100_000
        first = await trio.to_thread.run_sync(_stalled_gob, typha.port, 60_000, 50_000)
        with trio.fail_after(5):
            while budget.total < 50_000:
                await trio.sleep(0.02)
        assert metrics.unauthenticated_buffered_bytes._value.get() == budget.total
        # Over the per-connection cap before the hello (64 KiB): closed at once.
        big = await trio.to_thread.run_sync(_stalled_gob, typha.port, 100_000, 10)
        assert await trio.to_thread.run_sync(_closed_by_server, big)
        # A second stalled client would take the total over 100,000 bytes: closed ...
        second = await trio.to_thread.run_sync(_stalled_gob, typha.port, 60_000, 55_000)
        assert await trio.to_thread.run_sync(_closed_by_server, second)
        # ... while the first, within the budget, is still open and counted.
        assert not await trio.to_thread.run_sync(_closed_by_server, first, 0.5)
        assert 50_000 <= budget.total < 100_000
        first.close()
        with trio.fail_after(5):
            while budget.total:
                await trio.sleep(0.02)
        for s in (big, second):
            s.close()
        # And a real client still gets through (the budget only held unfinished hellos).
        good = await trio.to_thread.run_sync(_raw_gob_until_hello, typha.port, _golike().good)
        assert b"MsgServerHello" in good


async def test_a_gob_client_silent_after_its_first_bytes_is_closed_at_handshake_timeout() -> None:
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerHandshakeTimeoutSecs=1)) as typha:
        silent = await trio.to_thread.run_sync(_stalled_gob, typha.port, 100, 10)
        started = trio.current_time()
        assert await trio.to_thread.run_sync(_closed_by_server, silent, 5.0)
        assert 0.8 < trio.current_time() - started < 3
        silent.close()
        good = await trio.to_thread.run_sync(_raw_gob_until_hello, typha.port, _golike().good)
        assert b"MsgServerHello" in good


def _hello_then_silence(port: int, hold: float) -> tuple[bytes, bool]:
    """A gob client that completes a plain hello and then never answers a ping: (what it
    received, whether the server closed the connection within ``hold`` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=hold) as s:
        s.sendall(_golike().good)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        return out, True


@pytest.mark.parametrize("plain", [False, True], ids=["snappy", "plain"])
async def test_pings_keep_calicos_client_and_drop_a_client_that_never_pongs(plain: bool) -> None:
    require_gobcheck()
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    # Pings every 0.2 s; the pong timeout (0.3 s <= 2 pings) becomes 6 pings, 1.2 s.
    cfg = make_config(ServerPingIntervalSecs=0.2, ServerPongTimeoutSecs=0.3)
    async with run_typha(ds, cfg) as typha:
        client = GoClient(typha.address, "felix", plain=plain)
        try:
            await client.wait_for(lambda: client.in_sync, "in sync")
            silent = await trio.to_thread.run_sync(_hello_then_silence, typha.port, 6.0)
            received, closed = silent
            assert b"MsgPing" in received and closed  # pinged, then dropped
            # Calico's client answered every ping meanwhile: still connected, acked.
            assert client.proc.poll() is None
            [info] = [c for c in typha.server.status()["clients"] if c["node"] == "gobcheck-node"]
            assert info["acked_age_secs"] is not None and info["acked_age_secs"] < 1.0
            assert info["acked_seq"] == info["sent_seq"]
        finally:
            client.close()


async def test_calico_client_from_kubernetes_gets_resource_versions_and_update_types(
    kube_apiserver: KubeApiServer,
) -> None:
    """On the real kube-apiserver: a pod's workload endpoint reaches Calico's client new, then
    updated, then deleted, each with the pod's resourceVersion as its revision."""
    require_gobcheck()
    ns = f"gob-{uuid.uuid4().hex[:8]}"
    cfg = KubeConfig.load(kube_apiserver.kubeconfig_path)
    pods = resource_path("v1", "pods", namespace=ns)
    async with KubeClient(cfg) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        try:
            async with run_typha(KubernetesDatastore(cfg)) as typha:
                client = GoClient(typha.address, "felix")
                try:
                    await client.wait_for(lambda: client.in_sync, "in sync")
                    profile = f"/calico/v1/policy/profile/kns.{ns}/rules"
                    await client.wait_for(lambda: profile in client.state(), "the profile")
                    ns_obj = await kube.get(f"/api/v1/namespaces/{ns}")
                    rv_ns = ns_obj["metadata"]["resourceVersion"]
                    # libcalico-go's profile revision: "<namespace rv>/<account rv>".
                    assert client.state()[profile]["revision"] == f"{rv_ns}/"
                    key = workload_endpoint_key("gob-node", "k8s", f"{ns}/p1", "eth0")
                    body = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": "p1",
                            "namespace": ns,
                            "labels": {"app": "a"},
                            "annotations": {"cni.projectcalico.org/podIP": "10.66.0.1/32"},
                        },
                        "spec": {
                            "nodeName": "gob-node",
                            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                        },
                    }
                    created = await kube.create(pods, body)
                    await client.wait_for(lambda: key in client.state(), "the endpoint")
                    patched = await kube.patch(f"{pods}/p1", {"metadata": {"labels": {"app": "b"}}})
                    await client.wait_for(
                        lambda: '"app":"b"' in (client.state().get(key) or {}).get("value", ""),
                        "the relabel",
                    )
                    await kube.delete(f"{pods}/p1", grace_period_seconds=0)
                    await client.wait_for(
                        lambda: any(
                            u["key"] == key and u["updateType"] == 3 for u in client.updates
                        ),
                        "the deletion",
                    )
                    mine = [u for u in client.updates if u["key"] == key]
                    assert [u["updateType"] for u in mine] == [1, 2, 3]
                    assert mine[0]["revision"] == created["metadata"]["resourceVersion"]
                    assert mine[1]["revision"] == patched["metadata"]["resourceVersion"]
                    assert mine[2]["revision"] not in (None, "<nil>")
                finally:
                    client.close()
        finally:
            with trio.CancelScope(shield=True):
                await kube.delete(f"/api/v1/namespaces/{ns}", grace_period_seconds=0)


def _stalled_msgpack(port: int, declared: int, sent: int) -> socket.socket:
    """A msgpack client that declares a frame of ``declared`` bytes, sends ``sent`` of them and
    stalls."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(declared.to_bytes(4, "big") + b"\x00" + b"\x00" * sent)
    return s


async def test_msgpack_and_gob_hellos_share_the_unauthenticated_budget() -> None:
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerHandshakeTimeoutSecs=20)) as typha:
        budget = typha.server.context.input_budget
        budget.limit = 100_000
        ours = await trio.to_thread.run_sync(_stalled_msgpack, typha.port, 60_000, 50_000)
        with trio.fail_after(5):
            while budget.total < 50_000:
                await trio.sleep(0.02)
        # More than 64 KiB before a msgpack hello: closed, though the frame limit is 1 MiB.
        big = await trio.to_thread.run_sync(_stalled_msgpack, typha.port, 500_000, 70_000)
        assert await trio.to_thread.run_sync(_closed_by_server, big)
        # A gob client that would take the total over the budget: closed ...
        gob = await trio.to_thread.run_sync(_stalled_gob, typha.port, 60_000, 55_000)
        assert await trio.to_thread.run_sync(_closed_by_server, gob)
        # ... while the msgpack one within it stays open and counted; closing releases it.
        assert not await trio.to_thread.run_sync(_closed_by_server, ours, 0.5)
        assert 50_000 <= budget.total < 100_000
        ours.close()
        with trio.fail_after(5):
            while budget.total:
                await trio.sleep(0.02)
        for s in (big, gob):
            s.close()
        async with trio.open_nursery() as nursery:
            client = SyncClient([typha.address], "node-after")
            nursery.start_soon(client.run)
            with trio.fail_after(10):
                await client.in_sync.wait()
            assert len(client.state) == 3
            nursery.cancel_scope.cancel()


async def test_a_snappy_client_that_never_acks_the_restart_is_closed_at_the_pong_timeout() -> None:
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(3)))
    cfg = make_config(ServerPingIntervalSecs=0.2, ServerPongTimeoutSecs=0.3)  # pong timeout 1.2 s
    async with run_typha(ds, cfg) as typha:
        from tests.protocol.gob.golike import GoLikeClientEncoder
        from typha.protocol.gob import ClientHello

        hello = GoLikeClientEncoder().encode(
            ClientHello(
                hostname="n1",
                syncer_type="felix",
                supports_decoder_restart=True,
                supported_compression=("snappy",),
                supports_modern_policy_keys=True,
            )
        )
        started = trio.current_time()
        received, closed = await trio.to_thread.run_sync(_send_and_read, typha.port, hello, 6.0)
        assert closed and 1.0 < trio.current_time() - started < 4
        # It got the ServerHello and the restart, and nothing after them (no snapshot).
        assert b"MsgServerHello" in received and b"MsgDecoderRestart" in received
        assert b"sNaPpY" not in received


def _send_and_read(port: int, data: bytes, hold: float) -> tuple[bytes, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=hold) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        return out, True


async def test_a_gob_client_that_never_reads_is_dropped_by_the_write_timeout() -> None:
    """A plain gob client that sends its hello and reads nothing is dropped once its socket
    stays full for the write timeout, while Calico's client beside it keeps receiving."""
    require_gobcheck()
    ds = MemoryDatastore(dict(_wep_kv(i) for i in range(10)))
    cfg = make_config(ServerWriteTimeoutSecs=1.0, ServerPingIntervalSecs=60)
    async with run_typha(ds, cfg) as typha:
        neighbour = GoClient(typha.address, "felix")
        deaf = socket.socket()
        try:
            deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            deaf.connect(("127.0.0.1", typha.port))
            deaf.sendall(_golike().good)  # a plain hello; then it never reads
            await neighbour.wait_for(lambda: neighbour.in_sync, "in sync")
            with trio.fail_after(5):
                while len(typha.server.connections) < 2:
                    await trio.sleep(0.02)
            pad = "x" * 20_000
            for r in range(30):
                ds.apply([Update(*_wep_kv(i, f"r{r}{pad}")) for i in range(10)])
                await trio.sleep(0.02)
            with trio.fail_after(15):
                while len(typha.server.connections) > 1:
                    await trio.sleep(0.05)
            [left] = typha.server.connections.values()
            assert left.info.node == "gobcheck-node"
            key = _wep_kv(9)[0]
            await neighbour.wait_for(
                lambda: json.loads(neighbour.state()[key]["value"])["labels"]["app"].startswith(
                    "r29"
                ),
                "the last update",
            )
        finally:
            deaf.close()
            neighbour.close()
