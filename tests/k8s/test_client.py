"""The Kubernetes client: status-to-error mapping, the NDJSON watch reader, and list, pages,
CRUD, dry run and watch against a REAL kube-apiserver (tests/peers)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.k8s.helpers import (
    cleanup,
    unique,
)
from typha.k8s.client import (
    KubeClient,
    KubeConflict,
    KubeUnavailable,
    ResourceExpired,
    ResourceNotFound,
    error_from_status,
    resource_path,
)
from typha.k8s.kubeconfig import KubeConfig


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
