"""Hostile datastore values: deep nesting and unexpected exceptions cost one key, never Typha.

Every key's conversion runs inside a guard that turns *any* exception into "this key is
invalid" (logged, counted in ``typha_datastore_invalid_values_total``, deleted for clients).
The tests feed the specific case (JSON nested ~1,000 levels deep, which made ``json.loads``
raise ``RecursionError``) and an exception type no converter raises, against a real etcd and a
real kube-apiserver, next to positive controls: the other keys arrive, and a fixed value comes
back.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import trio

from felix_client.sync_client import SyncClient
from tests.k8s.helpers import (
    calico,
    cleanup,
    crd_body,
    kube,  # noqa: F401 - a fixture
    kube_config,
    unique,
    wait_until,
)
from tests.peers.etcd import EtcdServer
from tests.peers.kube_apiserver import KubeApiServer
from tests.sync.test_etcd_datastore import (
    ReferenceSink,
    datastore_for,
    invalid_counter,
    model_keys,
    running,
    wep,
)
from tests.typha_harness import run_typha
from typha import jsonlimit
from typha.cache.feed import encode_update
from typha.k8s.client import KubeClient
from typha.model import keys
from typha.protocol.codec import MalformedFrame, decode_payload
from typha.sync.base import Update
from typha.sync.convert import convert_etcd_kv, etcd_key_for
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_writer import apply_resources
from typha.sync.kubernetes import KubernetesDatastore


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of a list nested ``depth`` levels deep (2 bytes a level)."""
    return "[" * depth + leaf + "]" * depth


def with_deep_field(resource: dict[str, Any], depth: int) -> bytes:
    """``resource`` as JSON with ``spec.extra`` nested ``depth`` levels deep. Written by hand:
    ``json.dumps`` itself cannot encode it."""
    text = json.dumps(resource)
    assert text.endswith("}}")
    return (text[:-2] + f', "extra": {nested(depth)}' + "}}").encode()


class Surprise(Exception):
    """An exception type no converter raises."""


# --- the bounded decoder -------------------------------------------------------------------------


def test_jsonlimit_bounds_depth_and_marks_deep_objects_in_an_envelope() -> None:
    # json.loads itself fails on ~1,000 levels with RecursionError, not ValueError.
    with pytest.raises(RecursionError):
        json.loads(nested(5000))
    with pytest.raises(jsonlimit.TooDeep):
        jsonlimit.loads(nested(5000))
    with pytest.raises(jsonlimit.TooDeep):
        jsonlimit.loads(nested(jsonlimit.MAX_DEPTH + 1))  # json.loads copes; the bound does not
    # Positive controls: at the bound, and brackets inside strings do not count.
    assert jsonlimit.loads(nested(jsonlimit.MAX_DEPTH)) is not None
    assert jsonlimit.loads(json.dumps({"s": "[" * 5000})) == {"s": "[" * 5000}
    # An envelope keeps its shallow objects and marks only the deep one, which keeps its name.
    good = {"metadata": {"name": "good"}, "spec": {"a": [1, 2.5, None, True, "x"]}}
    page = (
        '{"items": ['
        + json.dumps(good)
        + ', {"metadata": {"name": "deep"}, "spec": {"x": '
        + nested(5000)
        + "}}]}"
    )
    doc = jsonlimit.loads_marking(page)
    assert doc["items"][0] == good
    deep = doc["items"][1]
    assert jsonlimit.TOO_DEEP_KEY in deep and deep["metadata"] == {"name": "deep"}
    assert jsonlimit.nesting_depth(doc) <= jsonlimit.MAX_DEPTH + 1
    # The slow path decodes what json.loads decodes.
    sample = {"a": [{"b": '\u00e9\\"]'}, -1.5e3, 12345678901234567890, False, None], "c": {}}
    assert jsonlimit._parse_marking(json.dumps(sample, indent=1), 50) == sample
    for bad in ("{", "[1,]", '{"a" 1}', "[1 2]", "", "{}x"):
        with pytest.raises(ValueError):
            jsonlimit._parse_marking(bad, 50)


def test_msgpack_refuses_depth_on_both_ends() -> None:
    """msgpack already bounds nesting: verified here rather than bounded again."""
    deep: Any = "leaf"
    for _ in range(2000):
        deep = [deep]
    # Typha's encoder: a too-deep value becomes a ValueError (the feed deletes that key)...
    with pytest.raises(ValueError):
        encode_update(Update("/calico/v1/policy/tier/default/policy/p", deep))
    shallow: Any = "leaf"
    for _ in range(50):
        shallow = [shallow]
    assert encode_update(Update("/calico/v1/policy/tier/default/policy/p", shallow))  # control
    # ... and the client's decoder: deeper than msgpack's stack is a malformed frame.
    frame = b"\x92\x01" + b"\x91" * 1100 + b"\x01"  # [1, [[[…1…]]]]: a type-1 message
    with pytest.raises(MalformedFrame, match="invalid msgpack"):
        decode_payload(frame)
    with pytest.raises(ValueError):
        msgpack.unpackb(b"\x91" * 1100 + b"\x01")
    assert msgpack.unpackb(b"\x91" * 500 + b"\x01") is not None  # control


# --- etcd -----------------------------------------------------------------------------------------


async def test_deeply_nested_etcd_value_is_invalid_not_fatal(etcd_server: EtcdServer) -> None:
    good = [wep(i) for i in range(10)]
    very_deep, over_bound = wep(100), wep(101)
    async with EtcdClient([etcd_server.client_url]) as client:
        await apply_resources(client, good)
        # ~2 KB: json.loads raises RecursionError on it (the crash-loop of every Typha).
        await client.put(etcd_key_for(very_deep), with_deep_field(very_deep, 1000))
        # json.loads copes with this one; the depth bound refuses it.
        await client.put(etcd_key_for(over_bound), with_deep_field(over_bound, 150))
        before = invalid_counter()
        sink = ReferenceSink()
        ds = datastore_for(etcd_server)
        expected = set().union(*(model_keys(r) for r in good))
        async with running(ds, sink):
            await sink.wait_for(lambda: sink.finished_resyncs == 1, "initial resync")
            # Positive control: every good key arrived; the deep ones produced nothing.
            assert set(sink.state) == expected
            assert ds.invalid_values == 2
            assert invalid_counter() - before == 2

            # Watch path: a deep value over a good key deletes what that key produced.
            victim = good[3]
            victim_keys = model_keys(victim)
            await client.put(etcd_key_for(victim), with_deep_field(victim, 5000))
            await sink.wait_for(lambda: not victim_keys & sink.state.keys(), "victim deleted")
            assert ds.invalid_values == 3
            assert set(sink.state) == expected - victim_keys
            # Positive control: fixing it brings the keys back, and the watch still runs.
            await apply_resources(client, [victim, over_bound])
            want = expected | model_keys(over_bound)
            await sink.wait_for(lambda: set(sink.state) == want, "fixed values back")
            assert ds.invalid_values == 3
        assert ds.resyncs == 1


async def test_any_exception_in_one_etcd_conversion_costs_only_that_key(
    etcd_server: EtcdServer,
) -> None:
    good = [wep(i) for i in range(10)]
    failing: dict[str, BaseException] = {
        etcd_key_for(good[1]): Surprise("nobody expects this"),
        etcd_key_for(good[2]): RecursionError("maximum recursion depth exceeded"),
    }

    def convert(key: str, obj: dict[str, Any]) -> list[Update]:
        if key in failing:
            raise failing[key]
        return convert_etcd_kv(key, obj)

    async with EtcdClient([etcd_server.client_url]) as client:
        await apply_resources(client, good)
        before = invalid_counter()
        sink = ReferenceSink()
        ds = datastore_for(etcd_server, convert=convert)
        async with running(ds, sink):
            await sink.wait_for(lambda: sink.finished_resyncs == 1, "initial resync")
            expected = set().union(*(model_keys(r) for r in good[3:] + good[:1]))
            assert set(sink.state) == expected  # control: the others all arrived
            assert ds.invalid_values == 2 and invalid_counter() - before == 2
            # Watch path: the surprise on a key that was fine deletes its keys...
            failing[etcd_key_for(good[5])] = Surprise("again")
            await apply_resources(client, [wep(5, label="b")])
            victim_keys = model_keys(good[5])
            await sink.wait_for(lambda: not victim_keys & sink.state.keys(), "victim deleted")
            assert ds.invalid_values == 3
            # ... and once the converter copes again, the keys come back.
            failing.clear()
            await apply_resources(client, [good[1], good[2], good[5]])
            want = set().union(*(model_keys(r) for r in good))
            await sink.wait_for(lambda: set(sink.state) == want, "all keys back")
            assert ds.invalid_values == 3


# --- Kubernetes -----------------------------------------------------------------------------------


def _raw_crd(kind: str, name: str, deep_depth: int, resource_version: str = "") -> bytes:
    body = crd_body(kind, name, {"nets": ["10.1.0.0/16"]})
    if resource_version:
        body["metadata"]["resourceVersion"] = resource_version
    text = json.dumps(body)
    return (text[:-2] + f', "extra": {nested(deep_depth)}' + "}}").encode()


@pytest.mark.k8s
async def test_deeply_nested_kubernetes_object_is_invalid_not_fatal(
    kube_apiserver: KubeApiServer,
    kube: KubeClient,  # noqa: F811 - the fixture
) -> None:
    path = calico("globalnetworksets")
    deep_at_list, good, deep_at_watch = unique("deep"), unique("good"), unique("later")
    mid_deep = unique("mid")
    key = keys.network_set_key
    async with cleanup(kube) as created:
        # Written as raw JSON: the apiserver accepts 2,000 levels (Go's decoder allows 10,000).
        await kube.request(
            "POST",
            path,
            content=_raw_crd("GlobalNetworkSet", deep_at_list, 2000),
            headers={"Content-Type": "application/json"},
        )
        created.append(f"{path}/{deep_at_list}")
        # Past the bound but within the C decoder's reach: the converter's copy recurses.
        await kube.request(
            "POST",
            path,
            content=_raw_crd("GlobalNetworkSet", mid_deep, 600),
            headers={"Content-Type": "application/json"},
        )
        created.append(f"{path}/{mid_deep}")
        await kube.create(path, crd_body("GlobalNetworkSet", good, {"nets": ["10.2.0.0/16"]}))
        created.append(f"{path}/{good}")
        before = invalid_counter()
        ds = KubernetesDatastore(kube_config(kube_apiserver))
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            client = SyncClient([typha.address], "n1", "felix")
            nursery.start_soon(client.run)
            # Control: the good set of the same list page arrives; the deep one does not.
            await wait_until(lambda: key(good) in client.state, what="good network set")
            assert key(deep_at_list) not in client.state and key(mid_deep) not in client.state
            assert ds.invalid_values == 2 and invalid_counter() - before == 2
            # Watch path: a deep object arriving later is invalid too; the watch goes on.
            await kube.create(path, crd_body("GlobalNetworkSet", deep_at_watch, {"nets": []}))
            created.append(f"{path}/{deep_at_watch}")
            await wait_until(lambda: key(deep_at_watch) in client.state, what="later set")
            rv = (await kube.get(f"{path}/{deep_at_watch}"))["metadata"]["resourceVersion"]
            await kube.request(
                "PUT",
                f"{path}/{deep_at_watch}",
                content=_raw_crd("GlobalNetworkSet", deep_at_watch, 2000, rv),
                headers={"Content-Type": "application/json"},
            )
            await wait_until(lambda: key(deep_at_watch) not in client.state, what="deleted")
            assert ds.invalid_values == 3
            # Positive control: fixing the object brings it back.
            fixed = crd_body("GlobalNetworkSet", deep_at_list, {"nets": ["10.3.0.0/16"]})
            rv = (await kube.get(f"{path}/{deep_at_list}"))["metadata"]["resourceVersion"]
            fixed["metadata"]["resourceVersion"] = rv
            await kube.request("PUT", f"{path}/{deep_at_list}", json_body=fixed)
            await wait_until(lambda: key(deep_at_list) in client.state, what="fixed set")
            assert ds.invalid_values == 3
            nursery.cancel_scope.cancel()


@pytest.mark.k8s
async def test_any_exception_in_one_kubernetes_conversion_costs_only_that_object(
    kube_apiserver: KubeApiServer,
    kube: KubeClient,  # noqa: F811 - the fixture
) -> None:
    from typha.sync.convert import k8s_to_updates

    path = calico("globalnetworksets")
    victim, other = unique("victim"), unique("other")
    failing: set[str] = {victim}

    def convert(obj: dict[str, Any], **kwargs: Any) -> list[Update]:
        if (obj.get("metadata") or {}).get("name") in failing:
            raise Surprise("nobody expects this")
        return k8s_to_updates(obj, **kwargs)

    key = keys.network_set_key
    async with cleanup(kube) as created:
        for name in (victim, other):
            await kube.create(path, crd_body("GlobalNetworkSet", name, {"nets": ["10.4.0.0/16"]}))
            created.append(f"{path}/{name}")
        ds = KubernetesDatastore(kube_config(kube_apiserver), convert=convert)
        async with run_typha(ds) as typha, trio.open_nursery() as nursery:
            client = SyncClient([typha.address], "n1", "felix")
            nursery.start_soon(client.run)
            await wait_until(lambda: key(other) in client.state, what="other set")  # control
            assert key(victim) not in client.state and ds.invalid_values == 1
            failing.clear()
            await kube.patch(f"{path}/{victim}", {"spec": {"nets": ["10.5.0.0/16"]}})
            await wait_until(lambda: key(victim) in client.state, what="victim back")
            failing.add(other)
            await kube.patch(f"{path}/{other}", {"spec": {"nets": ["10.6.0.0/16"]}})
            await wait_until(lambda: key(other) not in client.state, what="other deleted")
            assert ds.invalid_values == 2
            nursery.cancel_scope.cancel()
