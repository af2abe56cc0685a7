"""The Kubernetes datastore against a REAL kube-apiserver (tests/peers), plus unit tests of the
client (kubeconfig, NDJSON watch parsing) and the churn filter.

Every check that something does *not* happen sits next to a positive control that shows the
same path working when it should.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
import yaml
from prometheus_client import REGISTRY

from felix_client.sync_client import SyncClient
from tests.peers.kube_apiserver import KubeApiServer, find_kube_apiserver
from tests.peers.plugin import CRD_DIR, require_binary
from tests.typha_harness import run_typha
from typha.k8s.client import (
    KubeClient,
    KubeConflict,
    KubeError,
    KubeUnavailable,
    ResourceExpired,
    ResourceNotFound,
    error_from_status,
    resource_path,
)
from typha.k8s.kubeconfig import KubeConfig, KubeConfigError
from typha.model import keys
from typha.protocol import KVs, SyncStatus
from typha.sync.base import (
    DatastoreEvent,
    ResyncFinished,
    ResyncStarted,
    Updates,
)
from typha.sync.churn import (
    METADATA_ONLY,
    NO_OP_CONVERSION,
    NOT_FOR_FELIX,
    STATUS_ONLY,
    ChurnFilter,
)
from typha.sync.convert import k8s_to_updates
from typha.sync.kubernetes import KDD_RESOURCES, KubernetesDatastore

CALICO = "crd.projectcalico.org/v1"


# --- helpers ------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
    assert pred(), f"timed out after {timeout}s waiting for {what or pred}"


def pod_body(
    ns: str,
    name: str,
    node: str | None,
    *,
    labels: dict[str, str] | None = None,
    ip: str | None = None,
    host_network: bool = False,
    service_account: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}}
    if ip:
        # What Calico's CNI plugin writes at network set-up.
        meta["annotations"] = {"cni.projectcalico.org/podIP": f"{ip}/32"}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"name": "http", "containerPort": 80}],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pods_path(ns: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path("v1", "pods", namespace=ns, name=name, subresource=sub)


def calico(plural: str, name: str | None = None, ns: str | None = None) -> str:
    return resource_path(CALICO, plural, namespace=ns, name=name)


def crd_body(kind: str, name: str, spec: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": CALICO, "kind": kind, "metadata": meta, "spec": spec}


def wep_key(node: str, ns: str, pod: str) -> str:
    return keys.workload_endpoint_key(node, "k8s", f"{ns}/{pod}", "eth0")


def expected_from(objs: list[dict[str, Any]], syncer: str) -> dict[str, Any]:
    """What a client of ``syncer`` must hold for these objects (the converters' output)."""
    out: dict[str, Any] = {}
    for obj in objs:
        for upd in k8s_to_updates(obj):
            if upd.value is not None and syncer in keys.syncer_types_for(upd.key):
                out[upd.key] = upd.value
    return out


def kvs_counter(client: SyncClient) -> list[int]:
    """Count KVs *frames* and KVs received by ``client`` from now on: [frames, kvs]."""
    counts = [0, 0]

    def on_kvs(msg: KVs) -> None:
        counts[0] += 1
        counts[1] += len(msg.kvs)

    client.on_kvs = on_kvs
    return counts


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@contextlib.asynccontextmanager
async def cleanup(kube: KubeClient) -> AsyncIterator[list[str]]:
    """Paths appended to the yielded list are deleted (grace 0) when the block exits."""
    paths: list[str] = []
    try:
        yield paths
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for path in reversed(paths):
                with contextlib.suppress(KubeError):
                    await kube.delete(path, grace_period_seconds=0)


def kube_config(server: KubeApiServer) -> KubeConfig:
    return KubeConfig.load(server.kubeconfig_path)


@pytest.fixture
async def kube(kube_apiserver: KubeApiServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(kube_config(kube_apiserver)) as client:
        yield client


@pytest.fixture(scope="module")
def fault_apiserver() -> Iterator[KubeApiServer]:
    """A private apiserver this module may stop, restart and compact under.

    Pods have no watch cache (``--watch-cache-sizes=pods#0``): pod watches are served by etcd,
    so compacting etcd makes an old pod resourceVersion expire (a real 410), while the other
    types keep being served from the watch cache.
    """
    binary = require_binary(
        find_kube_apiserver, "kube-apiserver", "scripts/build-peers.sh kube-apiserver"
    )
    server = KubeApiServer(binary=binary, extra_args=["--watch-cache-sizes=pods#0"])
    try:
        server.start()
        server.apply_crds(CRD_DIR)
        yield server
    finally:
        server.close()


# === unit: kubeconfig ===========================================================================


def test_kubeconfig_files_merge_relative_paths_and_inline_data(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("typha-client")
    ca_pem = ca.cert_pem.bytes()
    first = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "inline",
        "clusters": [
            {
                "name": "c1",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": "u1",
                "user": {
                    "client-certificate-data": base64.b64encode(
                        cert.cert_chain_pems[0].bytes()
                    ).decode(),
                    "client-key-data": base64.b64encode(cert.private_key_pem.bytes()).decode(),
                },
            }
        ],
        "contexts": [{"name": "inline", "context": {"cluster": "c1", "user": "u1"}}],
    }
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ca.crt").write_bytes(ca_pem)
    (tmp_path / "sub" / "token").write_text("tok-from-file\n")
    second = {
        "current-context": "ignored-because-first-file-sets-it",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://shadowed:1"}},
            {
                "name": "c2",
                "cluster": {"server": "https://10.0.0.1", "certificate-authority": "ca.crt"},
            },
        ],
        "users": [{"name": "u2", "user": {"tokenFile": "token"}}],
        "contexts": [
            {
                "name": "files",
                "context": {"cluster": "c2", "user": "u2", "namespace": "kube-system"},
            }
        ],
    }
    f1 = tmp_path / "one.yaml"
    f2 = tmp_path / "sub" / "two.yaml"
    f1.write_text(yaml.safe_dump(first))
    f2.write_text(yaml.safe_dump(second))

    env = {"KUBECONFIG": f"{f1}:{tmp_path / 'missing.yaml'}:{f2}"}
    inline = KubeConfig.load(environ=env)
    assert inline.server == "https://127.0.0.1:6443"  # first file wins for c1
    assert inline.ca_data == ca_pem and inline.cert_data and inline.key_data
    ctx = inline.ssl_context()  # loads the inline client cert through a private temp file
    assert not isinstance(ctx, bool)
    assert inline.auth() is None

    files = KubeConfig.load(environ=env, context="files")
    assert files.server == "https://10.0.0.1"
    assert files.ca_file == str(tmp_path / "sub" / "ca.crt")  # relative to its own file
    assert files.token_file == str(tmp_path / "sub" / "token")
    assert files.namespace == "kube-system"
    request = httpx.Request("GET", "https://10.0.0.1/api")
    auth = files.auth()
    assert auth is not None
    flow = auth.auth_flow(request)
    assert next(flow).headers["Authorization"] == "Bearer tok-from-file"

    # An explicit path beats $KUBECONFIG; an unknown context and exec plugins are refused.
    assert KubeConfig.load(f2, environ=env, context="files").server == "https://10.0.0.1"
    with pytest.raises(KubeConfigError, match="context"):
        KubeConfig.load(environ=env, context="nope")
    second["users"] = [{"name": "u2", "user": {"exec": {"command": "aws"}}}]
    f2.write_text(yaml.safe_dump(second))
    with pytest.raises(KubeConfigError, match="exec"):
        KubeConfig.load(f2, context="files")


def test_in_cluster_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(trustme.CA().cert_pem.bytes())
    (tmp_path / "namespace").write_text("calico-system")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = KubeConfig.load(environ=env, service_account_dir=str(tmp_path))
    assert cfg.server == "https://[fd00::1]:443"
    assert cfg.token_file == str(tmp_path / "token")
    assert cfg.ca_file == str(tmp_path / "ca.crt")
    assert cfg.namespace == "calico-system"
    assert cfg.source == "in-cluster"
    # KUBECONFIG wins over in-cluster; nothing at all is an error.
    with pytest.raises(KubeConfigError, match="no such file"):
        KubeConfig.load(environ={**env, "KUBECONFIG": str(tmp_path / "absent")})
    with pytest.raises(KubeConfigError, match="does not exist"):
        KubeConfig.in_cluster(environ=env, service_account_dir=str(tmp_path / "nowhere"))


def test_error_mapping() -> None:
    assert isinstance(error_from_status(410, {"reason": "Expired"}), ResourceExpired)
    too_large = {"message": "Too large resource version: 99, current: 10", "code": 504}
    assert isinstance(error_from_status(504, too_large), ResourceExpired)
    assert isinstance(error_from_status(404, None, "404 page not found"), ResourceNotFound)
    assert isinstance(error_from_status(409, {"reason": "AlreadyExists"}), KubeConflict)
    assert isinstance(error_from_status(503, None), KubeUnavailable)
    throttled = error_from_status(429, None)
    assert isinstance(throttled, KubeUnavailable) and throttled.throttled
    assert not isinstance(error_from_status(500, None), ResourceExpired)


# === unit: the NDJSON watch reader =============================================================


def _mock_client(chunks: list[bytes], status: int = 200) -> KubeClient:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["watch"] == "1"
        assert request.url.params["allowWatchBookmarks"] == "true"
        assert request.url.params["resourceVersion"] == "5"
        if status != 200:
            return httpx.Response(
                status, json={"kind": "Status", "code": status, "message": "gone"}
            )
        return httpx.Response(200, content=body())

    return KubeClient(KubeConfig(server="http://kube.test"), transport=httpx.MockTransport(handler))


async def test_watch_reader_long_lines_split_chunks_and_error_event() -> None:
    big = {
        "type": "ADDED",
        "object": {"metadata": {"name": "big", "resourceVersion": "6"}, "data": "x" * 3_000_000},
    }
    line = json.dumps(big).encode() + b"\n"
    bookmark = b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n'
    expired = (
        json.dumps(
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version: 5 (9)",
                },
            }
        ).encode()
        + b"\n"
    )
    # The 3 MB line arrives in 64 KiB pieces; the bookmark is split across two reads.
    chunks = [line[i : i + 65536] for i in range(0, len(line), 65536)]
    chunks += [bookmark[:10], bookmark[10:] + expired]
    async with _mock_client(chunks) as client:
        seen: list[tuple[str, str]] = []
        with pytest.raises(ResourceExpired, match="too old"):
            async with contextlib.aclosing(client.watch("/api/v1/pods", "5")) as events:
                async for etype, obj in events:
                    seen.append((etype, obj["metadata"]["resourceVersion"]))
        # Both events before the ERROR were delivered first (positive control).
        assert seen == [("ADDED", "6"), ("BOOKMARK", "7")]

    # A clean end of stream just ends the iteration; an HTTP 410 raises at open.
    async with (
        _mock_client([bookmark]) as client,
        client.open_watch("/api/v1/pods", "5") as stream,
    ):
        assert [e.type async for e in stream] == ["BOOKMARK"]
        assert stream.end_reason == "closed by server"
    async with _mock_client([], status=410) as client:
        with pytest.raises(ResourceExpired):
            async with client.open_watch("/api/v1/pods", "5"):
                pass


# === unit: churn filter ========================================================================


def _pod_obj(**changes: Any) -> dict[str, Any]:
    pod = pod_body("ns", "p", "node1", labels={"app": "a"}, ip="10.0.0.1")
    pod["metadata"]["resourceVersion"] = "1"
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    for path, value in changes.items():
        section, _, field_name = path.partition("__")
        pod.setdefault(section, {})[field_name] = value
    return pod


def test_churn_filter_classifies_by_what_changed() -> None:
    churn = ChurnFilter("pods", counter=None)
    base = _pod_obj()
    assert churn.check("ns/p", base, k8s_to_updates(base), force=True)

    def check(obj: dict[str, Any]) -> bool:
        """Is a change from ``base`` to ``obj`` emitted?"""
        churn.check("ns/p", base, k8s_to_updates(base), force=True)
        return churn.check("ns/p", obj, k8s_to_updates(obj))

    assert not check(_pod_obj(status__conditions=[{"type": "Ready", "status": "False"}]))
    assert not check(_pod_obj(metadata__resourceVersion="2", metadata__managedFields=[{"m": 1}]))
    assert not check(_pod_obj(metadata__finalizers=["x"]))
    assert not check(_pod_obj(spec__schedulerName="other"))
    # Positive controls: a label change and an IP change are emitted.
    assert check(_pod_obj(metadata__labels={"app": "b"}))
    assert check(_pod_obj(metadata__annotations={"cni.projectcalico.org/podIP": "10.0.0.2/32"}))
    assert churn.skipped == {STATUS_ONLY: 1, METADATA_ONLY: 2, NO_OP_CONVERSION: 1}

    host = pod_body("ns", "h", "node1", host_network=True)
    assert not churn.check("ns/h", host, k8s_to_updates(host))
    churn.deleted("ns/h", changed_output=False)
    assert churn.skipped[NOT_FOR_FELIX] == 2
    # force (lists) always emits, and forget_except drops what a relist did not see.
    assert churn.check("ns/p", base, k8s_to_updates(base), force=True)
    churn.forget_except({"ns/p"})
    assert len(churn) == 1


# === the real apiserver: client =================================================================


@pytest.mark.k8s
async def test_client_list_pages_crud_dry_run_and_watch(kube: KubeClient) -> None:
    ns = unique("client")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    async with cleanup(kube) as created:
        created.append(f"/api/v1/namespaces/{ns}")
        cms = resource_path("v1", "configmaps", namespace=ns)
        for i in range(7):
            await kube.create(cms, {"metadata": {"name": f"cm{i}"}, "data": {"i": str(i)}})
        # Dry run is validated but not persisted (the real create above is the control).
        await kube.create(cms, {"metadata": {"name": "dry"}}, dry_run=True)
        with pytest.raises(ResourceNotFound):
            await kube.get(f"{cms}/dry")
        with pytest.raises(KubeConflict):
            await kube.create(cms, {"metadata": {"name": "cm0"}})

        pages = []
        async with contextlib.aclosing(kube.list_pages(cms, page_size=3)) as it:
            async for page in it:
                pages.append(page)
        assert [len(p.items) for p in pages] == [3, 3, 1]
        assert {p.resource_version for p in pages} == {pages[0].resource_version}
        assert pages[0].items[0]["kind"] == "ConfigMap" and pages[0].items[0]["apiVersion"] == "v1"
        listed = await kube.list(cms, page_size=3)
        assert sorted(i["metadata"]["name"] for i in listed.items) == [f"cm{i}" for i in range(7)]

        # Watch from the list's resourceVersion: only what happens after it.
        events: list[tuple[str, str]] = []
        async with kube.open_watch(cms, listed.resource_version, timeout_seconds=30) as stream:
            await kube.patch(f"{cms}/cm1", {"data": {"i": "changed"}})
            await kube.apply(
                f"{cms}/applied",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}},
            )
            await kube.delete(f"{cms}/cm2")
            with trio.fail_after(10):
                async for ev in stream:
                    if ev.type != "BOOKMARK":
                        events.append((ev.type, ev.object["metadata"]["name"]))
                    if len(events) == 3:
                        break
        assert events == [("MODIFIED", "cm1"), ("ADDED", "applied"), ("DELETED", "cm2")]

        # A resource type that is not served (no such CRD) is a typed 404 for list and watch.
        with pytest.raises(ResourceNotFound):
            await kube.list("/apis/crd.projectcalico.org/v1/nosuchthings")
        with pytest.raises(ResourceNotFound):
            async with kube.open_watch("/apis/crd.projectcalico.org/v1/nosuchthings"):
                pass


# === the real apiserver: datastore → cache → server → clients ==================================


@pytest.mark.k8s
async def test_kdd_objects_reach_connected_clients(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ns = unique("kdd")
    node = unique("node")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns, "labels": {"team": "blue"}}})
    ds = KubernetesDatastore(kube_config(kube_apiserver))
    async with (
        cleanup(kube) as created,
        run_typha(ds) as typha,
        trio.open_nursery() as nursery,
    ):
        created.append(f"/api/v1/namespaces/{ns}")
        felix = SyncClient([typha.address], node, "felix")
        bgp = SyncClient([typha.address], node, "bgp")
        nursery.start_soon(felix.run)
        nursery.start_soon(bgp.run)
        with trio.fail_after(20):
            await felix.in_sync.wait()
            await bgp.in_sync.wait()
        await wait_until(
            lambda: ds.watches_started.total() == len(KDD_RESOURCES), what="one watch per type"
        )
        assert ds.lists.total() == len(KDD_RESOURCES) and not ds.relists

        # Namespace → profile kns.<ns> (listed before Typha started).
        labels_key = keys.profile_labels_key(f"kns.{ns}")
        assert felix.state[labels_key] == {
            "pcns.kubernetes.io/metadata.name": ns,  # added by the apiserver
            "pcns.projectcalico.org/name": ns,
            "pcns.team": "blue",
        }
        assert labels_key not in bgp.state  # profiles are felix-only

        # ServiceAccount → profile ksa.<ns>.<sa>
        sa_path = resource_path("v1", "serviceaccounts", namespace=ns)
        await kube.create(sa_path, {"metadata": {"name": "web", "labels": {"tier": "fe"}}})
        sa_key = keys.profile_labels_key(f"ksa.{ns}.web")
        await wait_until(lambda: sa_key in felix.state, what="service account profile")
        assert felix.state[sa_key]["pcsa.tier"] == "fe"

        # Pods: one without an IP yet, one host-networked, then one with the CNI annotation as a
        # sentinel — the same watch delivers events in order, so when the sentinel's endpoint
        # arrives the first two have been processed.
        await kube.create(
            pods_path(ns), pod_body(ns, "noip", node, labels={"app": "web"}, service_account="web")
        )
        await kube.create(pods_path(ns), pod_body(ns, "hostnet", node, host_network=True))
        await kube.patch(
            pods_path(ns, "hostnet", "status"), {"status": {"podIPs": [{"ip": "192.0.2.7"}]}}
        )
        await kube.create(pods_path(ns), pod_body(ns, "sentinel", node, ip="10.9.0.3"))
        await wait_until(lambda: wep_key(node, ns, "sentinel") in felix.state, what="sentinel")
        assert wep_key(node, ns, "noip") not in felix.state
        assert wep_key(node, ns, "hostnet") not in felix.state
        # Now give "noip" its IP through the status subresource (what the kubelet does).
        await kube.patch(
            pods_path(ns, "noip", "status"),
            {"status": {"podIP": "10.9.0.2", "podIPs": [{"ip": "10.9.0.2"}]}},
        )
        await wait_until(lambda: wep_key(node, ns, "noip") in felix.state, what="pod IP")
        wep = felix.state[wep_key(node, ns, "noip")]
        assert wep["ipv4_nets"] == ["10.9.0.2/32"]
        assert wep["profile_ids"] == [f"kns.{ns}", f"ksa.{ns}.web"]
        assert wep["labels"]["app"] == "web"
        assert wep_key(node, ns, "noip") not in bgp.state

        # Kubernetes NetworkPolicy.
        knp_path = resource_path("networking.k8s.io/v1", "networkpolicies", namespace=ns)
        await kube.create(
            knp_path,
            {
                "metadata": {"name": "deny-all"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Ingress"],
                },
            },
        )
        knp_key = keys.policy_key("KubernetesNetworkPolicy", ns, "deny-all")
        await wait_until(lambda: knp_key in felix.state, what="k8s network policy")

        # Calico CRDs and a node.
        gnp, pool, block, aff = unique("gnp"), unique("pool"), unique("block"), unique("aff")
        crds = [
            (
                calico("globalnetworkpolicies"),
                crd_body(
                    "GlobalNetworkPolicy",
                    gnp,
                    {"selector": "all()", "ingress": [{"action": "Allow"}]},
                ),
            ),
            (
                calico("networkpolicies", ns=ns),
                crd_body(
                    "NetworkPolicy",
                    "np1",
                    {"selector": "app == 'web'", "egress": [{"action": "Deny"}]},
                    ns,
                ),
            ),
            (
                calico("ippools"),
                crd_body("IPPool", pool, {"cidr": "10.77.0.0/16", "vxlanMode": "Always"}),
            ),
            (
                calico("ipamblocks"),
                crd_body("IPAMBlock", block, {"cidr": "10.77.1.0/26", "affinity": f"host:{node}"}),
            ),
            (
                calico("blockaffinities"),
                crd_body(
                    "BlockAffinity",
                    aff,
                    {
                        "state": "confirmed",
                        "node": node,
                        "cidr": "10.77.1.0/26",
                        "deleted": "false",
                    },
                ),
            ),
            (
                calico("globalnetworksets"),
                crd_body("GlobalNetworkSet", unique("gns"), {"nets": ["198.51.100.0/24"]}),
            ),
        ]
        for path, body in crds:
            await kube.create(path, body)
            created.append(f"{path}/{body['metadata']['name']}")
        node_body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "annotations": {"projectcalico.org/IPv4Address": "172.16.0.5/24"},
            },
        }
        await kube.create("/api/v1/nodes", node_body)
        created.append(f"/api/v1/nodes/{node}")

        # Everything we created, read back, converts to exactly what each client holds.
        def our_objects() -> list[str]:
            return [
                f"/api/v1/namespaces/{ns}",
                f"{sa_path}/web",
                pods_path(ns, "noip"),
                pods_path(ns, "hostnet"),
                pods_path(ns, "sentinel"),
                f"{knp_path}/deny-all",
                f"/api/v1/nodes/{node}",
                *[f"{p}/{b['metadata']['name']}" for p, b in crds],
            ]

        objs = [await kube.get(p) for p in our_objects()]
        want_felix = expected_from(objs, "felix")
        want_bgp = expected_from(objs, "bgp")
        assert keys.ip_pool_key("10.77.0.0/16") in want_bgp  # pools go to bgp too...
        assert keys.block_key("10.77.1.0/26") not in want_bgp  # ...blocks do not
        assert keys.block_affinity_key(node, "10.77.1.0/26") in want_bgp
        await wait_until(
            lambda: (
                all(felix.state.get(k) == v for k, v in want_felix.items())
                and all(bgp.state.get(k) == v for k, v in want_bgp.items())
            ),
            what="every object at every client",
        )
        assert not set(want_felix) - set(felix.state)
        assert knp_key in felix.state and knp_key not in bgp.state
        assert keys.policy_key("GlobalNetworkPolicy", "", gnp) not in bgp.state

        # Changes: a label change updates the endpoint; deletions remove keys.
        await kube.patch(pods_path(ns, "noip"), {"metadata": {"labels": {"app": "api"}}})
        await wait_until(
            lambda: (
                felix.state.get(wep_key(node, ns, "noip"), {}).get("labels", {}).get("app") == "api"
            ),
            what="label change",
        )
        await kube.delete(f"{knp_path}/deny-all")
        await kube.delete(pods_path(ns, "sentinel"), grace_period_seconds=0)
        await kube.delete(calico("ippools", pool))
        created.remove(f"{calico('ippools')}/{pool}")
        await wait_until(
            lambda: (
                knp_key not in felix.state
                and wep_key(node, ns, "sentinel") not in felix.state
                and keys.ip_pool_key("10.77.0.0/16") not in bgp.state
            ),
            what="deletions",
        )
        assert wep_key(node, ns, "noip") in felix.state  # untouched neighbour stays
        for path in [pods_path(ns, "noip"), pods_path(ns, "hostnet")]:
            created.append(path)
        nursery.cancel_scope.cancel()


@pytest.mark.k8s
async def test_invalid_object_is_counted_and_treated_as_deleted(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    name = unique("gnp")
    path = calico("globalnetworkpolicies")
    ds = KubernetesDatastore(kube_config(kube_apiserver))
    invalid_before = metric("typha_datastore_invalid_values_total")
    async with cleanup(kube) as created, run_typha(ds) as typha, trio.open_nursery() as nursery:
        client = SyncClient([typha.address], "n1", "felix")
        nursery.start_soon(client.run)
        await kube.create(path, crd_body("GlobalNetworkPolicy", name, {"selector": "all()"}))
        created.append(f"{path}/{name}")
        key = keys.policy_key("GlobalNetworkPolicy", "", name)
        await wait_until(lambda: key in client.state, what="valid policy")
        # The CRD schema accepts this selector; the converter does not.
        await kube.patch(f"{path}/{name}", {"spec": {"selector": "this is ((( not a selector"}})
        await wait_until(lambda: key not in client.state, what="invalid policy deleted")
        assert ds.invalid_values == 1
        assert metric("typha_datastore_invalid_values_total") == invalid_before + 1
        await kube.patch(f"{path}/{name}", {"spec": {"selector": "all()"}})
        await wait_until(lambda: key in client.state, what="valid again")
        nursery.cancel_scope.cancel()


@pytest.mark.k8s
async def test_status_only_churn_sends_nothing_to_clients(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ns = unique("churn")
    node = unique("node")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    n_pods, per_pod = 10, 100
    ds = KubernetesDatastore(kube_config(kube_apiserver))
    async with cleanup(kube) as created, run_typha(ds) as typha, trio.open_nursery() as nursery:
        created.append(f"/api/v1/namespaces/{ns}")
        for i in range(n_pods):
            await kube.create(
                pods_path(ns), pod_body(ns, f"p{i}", node, labels={"v": "1"}, ip=f"10.8.0.{i + 1}")
            )
            created.append(pods_path(ns, f"p{i}"))
        client = SyncClient([typha.address], node, "felix")
        nursery.start_soon(client.run)
        await wait_until(
            lambda: all(wep_key(node, ns, f"p{i}") in client.state for i in range(n_pods)),
            what="pods",
        )
        counts = kvs_counter(client)
        skipped_before = ds.skipped_by_reason().get(STATUS_ONLY, 0)
        metric_before = metric("typha_updates_skipped_by_reason_total", {"reason": STATUS_ONLY})

        async def patcher(i: int) -> None:
            for j in range(per_pod):
                await kube.patch(
                    pods_path(ns, f"p{i}", "status"),
                    {
                        "status": {
                            "phase": "Running",
                            "conditions": [
                                {
                                    "type": "Ready",
                                    "status": "True" if j % 2 else "False",
                                    "reason": f"r{j}",
                                }
                            ],
                            "containerStatuses": [
                                {
                                    "name": "c",
                                    "ready": bool(j % 2),
                                    "restartCount": j,
                                    "image": "x",
                                    "imageID": "",
                                    "state": {},
                                }
                            ],
                        }
                    },
                )

        t0 = time.monotonic()
        async with trio.open_nursery() as patchers:
            for i in range(n_pods):
                patchers.start_soon(patcher, i)
        patch_secs = time.monotonic() - t0
        total = n_pods * per_pod
        await wait_until(
            lambda: ds.skipped_by_reason().get(STATUS_ONLY, 0) - skipped_before == total,
            what=f"{total} status-only skips",
        )
        await trio.sleep(0.3)  # anything wrongly emitted would have reached the client by now
        assert counts == [0, 0], f"status-only churn produced client frames: {counts}"
        assert ds.skipped_by_reason()[STATUS_ONLY] - skipped_before == total
        assert (
            metric("typha_updates_skipped_by_reason_total", {"reason": STATUS_ONLY}) - metric_before
            == total
        )
        # Positive control: a label change right after the churn does arrive, as 1 KV.
        await kube.patch(pods_path(ns, "p3"), {"metadata": {"labels": {"v": "2"}}})
        await wait_until(
            lambda: client.state[wep_key(node, ns, "p3")]["labels"]["v"] == "2", what="label"
        )
        assert counts == [1, 1]
        print(
            f"\nFIGURE status-only churn: {total} patches in {patch_secs:.2f}s "
            f"({total / patch_secs:.0f}/s), client frames={counts[0] - 1}, skipped={total}"
        )
        nursery.cancel_scope.cancel()


@pytest.mark.k8s
async def test_watch_count_on_apiserver_independent_of_clients(
    kube_apiserver: KubeApiServer, kube: KubeClient
) -> None:
    async def apiserver_watches() -> int:
        text = await kube.request("GET", "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    baseline = await apiserver_watches()
    ds = KubernetesDatastore(kube_config(kube_apiserver))
    figures: dict[int, int] = {}
    async with run_typha(ds) as typha, trio.open_nursery() as nursery:
        clients = [SyncClient([typha.address], f"w{i}", "felix") for i in range(500)]

        async def connect(batch: list[SyncClient], total: int) -> None:
            for c in batch:
                nursery.start_soon(c.run)
            with trio.fail_after(120):
                for c in batch:
                    await c.in_sync.wait()
            await wait_until(
                lambda: len(typha.server.connections) == total, what=f"{total} connections"
            )
            await wait_until(lambda: ds.watches_started.total() == len(KDD_RESOURCES))
            # The apiserver registers a watch a moment after answering its headers.
            held = -1
            with trio.move_on_after(5):
                while (held := await apiserver_watches() - baseline) != len(KDD_RESOURCES):
                    await trio.sleep(0.1)
            figures[total] = held

        await connect(clients[:1], 1)
        await connect(clients[1:], 500)
        assert figures == {1: len(KDD_RESOURCES), 500: len(KDD_RESOURCES)}
        print(f"\nFIGURE apiserver watches held by one Typha: {figures} (baseline {baseline})")
        nursery.cancel_scope.cancel()


@pytest.mark.k8s
@pytest.mark.slow
async def test_2000_pods_list_and_sync(kube_apiserver: KubeApiServer, kube: KubeClient) -> None:
    ns = unique("scale")
    n = 2000
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        limiter = trio.CapacityLimiter(16)

        async def create(i: int) -> None:
            async with limiter:
                await kube.create(
                    pods_path(ns),
                    pod_body(
                        ns,
                        f"p{i}",
                        f"node-{i % 50}",
                        labels={"app": f"a{i % 7}"},
                        ip=f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}",
                    ),
                )

        t0 = time.monotonic()
        async with trio.open_nursery() as creators:
            for i in range(n):
                creators.start_soon(create, i)
        create_secs = time.monotonic() - t0

        t0 = time.monotonic()
        listed = await kube.list(pods_path(ns), page_size=500)
        list_secs = time.monotonic() - t0
        assert len(listed.items) == n

        ds = KubernetesDatastore(kube_config(kube_apiserver))
        t0 = time.monotonic()
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            sync_secs = time.monotonic() - t0
            client = SyncClient([typha.address], "node-0", "felix")
            nursery.start_soon(client.run)
            ours = f"/workload/k8s/{ns}%2f"
            await wait_until(
                lambda: sum(1 for k in client.state if ours in k) == n, 60, "2000 endpoints"
            )
            snap = client.stats.snapshot_seconds[-1]
            # Deleting them all is seen too (positive control for deletions at scale).
            t0 = time.monotonic()
            await kube.delete_collection(pods_path(ns), grace_period_seconds=0)
            await wait_until(
                lambda: not any(ours in k for k in client.state), 60, "endpoints deleted"
            )
            delete_secs = time.monotonic() - t0
            nursery.cancel_scope.cancel()
        print(
            f"\nFIGURE 2000 pods: create {create_secs:.2f}s (16 concurrent), "
            f"KubeClient.list {list_secs:.3f}s (pages of 500), datastore initial sync "
            f"{ds.initial_sync_secs:.3f}s, Typha in sync {sync_secs:.3f}s, client snapshot "
            f"{snap:.3f}s, delete-collection seen by client {delete_secs:.2f}s"
        )
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(60):
            with contextlib.suppress(KubeError):
                await kube.delete_collection(pods_path(ns), grace_period_seconds=0)
            with contextlib.suppress(KubeError):
                await kube.delete(f"/api/v1/namespaces/{ns}")


# === datastore events: missing CRDs, scoped relists ============================================


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[DatastoreEvent] = []

    async def send(self, event: DatastoreEvent) -> None:
        self.events.append(event)


@pytest.mark.k8s
async def test_missing_crd_counts_as_listed_empty_and_is_retried(
    kube_apiserver: KubeApiServer,
) -> None:
    from typha.sync.kubernetes import ResourceType

    resources = (
        KDD_RESOURCES[1],  # namespaces
        ResourceType("nosuchthings", "NoSuchThing", "crd.projectcalico.org"),
    )
    ds = KubernetesDatastore(
        kube_config(kube_apiserver), resources=resources, missing_retry_secs=0.2
    )
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ds.run, sink)
        with trio.fail_after(10):
            await ds.in_sync.wait()
        await wait_until(lambda: ds.lists["namespaces"] == 1)
        await trio.sleep(0.7)  # a few retries of the missing type
        nursery.cancel_scope.cancel()
    assert ds.missing == {"nosuchthings.crd.projectcalico.org"}
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds[0] == "ConnectionStatus" and kinds[1] == "ResyncStarted"
    assert kinds.count("ResyncFinished") == 1  # the unscoped one; retries emit nothing
    assert isinstance(sink.events[1], ResyncStarted) and sink.events[1].scope is None
    updates = [e for e in sink.events if isinstance(e, Updates)]
    assert updates and all(u.scope == "namespaces" and u.revision is None for u in updates)
    assert ds.watches_started["namespaces"] == 1  # the served type went on to watch


@pytest.mark.k8s
async def test_forced_410_relists_that_type_only_without_loss(
    fault_apiserver: KubeApiServer,
) -> None:
    ns = unique("expire")
    node = unique("node")
    cfg = kube_config(fault_apiserver)
    sink_events: list[DatastoreEvent] = []
    async with KubeClient(cfg) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(3):
            await kube.create(pods_path(ns), pod_body(ns, f"p{i}", node, ip=f"10.6.0.{i + 1}"))
        # Short server-side watch timeouts: the pod watch is re-opened every ~2 s from its
        # last resourceVersion, which the compaction below makes expire.
        ds = KubernetesDatastore(cfg, watch_timeout_secs=2)
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            original_send = typha.feed.send

            async def recording_send(event: DatastoreEvent) -> None:
                sink_events.append(event)
                await original_send(event)

            # Record what the datastore emits from now on (the feed is its sink).
            typha.feed.send = recording_send  # type: ignore[method-assign]
            client = SyncClient([typha.address], node, "felix")
            nursery.start_soon(client.run)
            await wait_until(lambda: wep_key(node, ns, "p2") in client.state, what="pods")
            # Real changes: one pod deleted, one added; the client sees both.
            await kube.delete(pods_path(ns, "p0"), grace_period_seconds=0)
            await kube.create(pods_path(ns), pod_body(ns, "p3", node, ip="10.6.0.4"))
            await wait_until(
                lambda: (
                    wep_key(node, ns, "p3") in client.state
                    and wep_key(node, ns, "p0") not in client.state
                ),
                what="real changes",
            )
            counts = kvs_counter(client)
            relists_before = dict(ds.relists)
            # Move etcd on (non-pod writes) and compact: the pod watch's resourceVersion is gone.
            for i in range(3):
                await kube.create(
                    resource_path("v1", "configmaps", namespace=ns),
                    {"metadata": {"name": f"cm{i}"}},
                )
            await trio.to_thread.run_sync(fault_apiserver.etcd.compact)  # type: ignore[union-attr]
            await wait_until(
                lambda: ds.relists["pods"] > relists_before.get("pods", 0), 15, "pod relist"
            )
            await trio.sleep(0.5)
            # Exactly one type relisted; the others kept watching.
            assert ds.expired["pods"] >= 1
            assert {s: c for s, c in ds.relists.items() if c != relists_before.get(s, 0)} == {
                "pods": ds.relists["pods"] - relists_before.get("pods", 0)
            }
            scoped = [e for e in sink_events if isinstance(e, ResyncStarted | ResyncFinished)]
            assert scoped and all(e.scope == "pods" for e in scoped)
            assert isinstance(scoped[-1], ResyncFinished)
            # Nothing changed during the relist, so the client got nothing...
            assert counts == [0, 0]
            assert client.status is SyncStatus.IN_SYNC
            # ...and nothing was lost: the client holds exactly the pods that exist.
            live = {wep_key(node, ns, f"p{i}") for i in (1, 2, 3)}
            assert {k for k in client.state if f"/{ns}%2f" in k} == live
            # Positive control: the re-established watch still delivers.
            await kube.delete(pods_path(ns, "p1"), grace_period_seconds=0)
            await wait_until(
                lambda: wep_key(node, ns, "p1") not in client.state, what="after relist"
            )
            nursery.cancel_scope.cancel()


@pytest.mark.k8s
@pytest.mark.slow
async def test_apiserver_restart_with_50_clients_converges(
    fault_apiserver: KubeApiServer,
) -> None:
    ns = unique("restart")
    node = unique("node")
    cfg = kube_config(fault_apiserver)
    async with KubeClient(cfg) as kube:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(5):
            await kube.create(pods_path(ns), pod_body(ns, f"p{i}", node, ip=f"10.5.0.{i + 1}"))
        ds = KubernetesDatastore(cfg, backoff_cap=1.0)
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            clients = [SyncClient([typha.address], f"{node}-{i}", "felix") for i in range(50)]
            for c in clients:
                nursery.start_soon(c.run)
            await wait_until(
                lambda: all(wep_key(node, ns, "p4") in c.state for c in clients), 30, "50 clients"
            )
            counters = [kvs_counter(c) for c in clients]
            relists_before = dict(ds.relists)
            watches_before = dict(ds.watches_started)

            await trio.to_thread.run_sync(fault_apiserver.stop)
            await wait_until(
                lambda: all(c.status is SyncStatus.WAIT_FOR_DATASTORE for c in clients),
                30,
                "clients told the datastore is gone",
            )
            assert not typha.feed.connected
            t0 = time.monotonic()
            await trio.to_thread.run_sync(fault_apiserver.start)
            restart_secs = time.monotonic() - t0

            # Changes after the restart: one pod deleted, one added, one policy created.
            await kube.delete(pods_path(ns, "p0"), grace_period_seconds=0)
            await kube.create(pods_path(ns), pod_body(ns, "p5", node, ip="10.5.0.6"))
            gnp = unique("gnp")
            await kube.create(
                calico("globalnetworkpolicies"),
                crd_body("GlobalNetworkPolicy", gnp, {"selector": "all()"}),
            )
            want = {wep_key(node, ns, f"p{i}") for i in range(1, 6)}
            gnp_key = keys.policy_key("GlobalNetworkPolicy", "", gnp)
            t0 = time.monotonic()
            await wait_until(
                lambda: all(
                    c.status is SyncStatus.IN_SYNC
                    and gnp_key in c.state
                    and {k for k in c.state if f"/{ns}%2f" in k} == want
                    for c in clients
                ),
                60,
                "50 clients converged",
            )
            converge_secs = time.monotonic() - t0
            assert typha.feed.connected
            # Clients saw only the three real changes, not the relists behind them.
            assert all(cnt[1] == 3 for cnt in counters), sorted({cnt[1] for cnt in counters})
            # Every type re-watched; the cached types had expired (410 → relist), while pods
            # (no watch cache: served by etcd, not compacted) resumed from their
            # resourceVersion without a relist.
            await wait_until(
                lambda: all(ds.watches_started[s] > watches_before.get(s, 0) for s in ds.states),
                30,
                "every type watching again",
            )
            relisted = {s for s, c in ds.relists.items() if c > relists_before.get(s, 0)}
            assert "pods" not in relisted
            assert relisted <= set(ds.expired)
            print(
                f"\nFIGURE apiserver restart: down+up {restart_secs:.1f}s, 50 clients converged "
                f"{converge_secs:.2f}s after it was back; relisted {len(relisted)} types "
                f"(expired), pods resumed"
            )
            with contextlib.suppress(KubeError):
                await kube.delete(f"{calico('globalnetworkpolicies')}/{gnp}")
            nursery.cancel_scope.cancel()
