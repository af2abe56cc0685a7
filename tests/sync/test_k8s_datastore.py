"""The Kubernetes datastore against a REAL kube-apiserver (tests/peers): objects reach
connected clients, invalid objects, status-only churn, watch counts, a 2,000-pod sync.

Every check that something does *not* happen sits next to a positive control that shows the
same path working when it should."""

from __future__ import annotations

import contextlib
import time

import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.k8s.helpers import (
    calico,
    cleanup,
    crd_body,
    expected_from,
    kube_config,
    kvs_counter,
    metric,
    pod_body,
    pods_path,
    unique,
    wait_until,
    wep_key,
)
from tests.peers.kube_apiserver import KubeApiServer
from tests.typha_harness import run_typha
from typha.k8s.client import (
    KubeClient,
    KubeError,
    resource_path,
)
from typha.model import keys
from typha.sync.churn import (
    STATUS_ONLY,
)
from typha.sync.kubernetes import KDD_RESOURCES, KubernetesDatastore

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
