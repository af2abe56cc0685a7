"""The WorkloadEndpoints' fast path (``endpoints_fast``) against the general path.

Inputs start from the shape Calico's CNI plugin writes and change a few fields to values the
fast path must either convert exactly as the general path does (key, value, the value's key
order and bytes) or hand back (``None``), so that ``convert_etcd_kv`` gives the general
path's answer — its updates or its error, message included — for every input.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typha.model import keys
from typha.resources import workload_endpoint_for_pod
from typha.sync.convert.endpoints_fast import common_workload_endpoint
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.etcd import (
    V3_PREFIX,
    convert_etcd_kv,
    convert_etcd_kv_general,
    etcd_key_for,
    etcd_value_for,
)

_TEXT = st.text(alphabet="ab-/%.:AZ09 \n\x00é", max_size=8)
_ODD = st.sampled_from([None, "", 5, 1.5, True, [], {}, "x", ["x"], {"a": "b"}])

_OWN = {
    "projectcalico.org/namespace": "web",
    "projectcalico.org/orchestrator": "k8s",
    "projectcalico.org/serviceaccount": "default",
}
# path → values that field may take, besides the CNI plugin's own.
_FIELDS: dict[tuple[str, ...], list[Any]] = {
    ("apiVersion",): ["projectcalico.org/v3", None, "v1", 3],
    ("kind",): ["WorkloadEndpoint", None, "HostEndpoint", 7],
    ("metadata",): [None, [], "x"],
    ("metadata", "name"): [None, "", "other", 5],
    ("metadata", "namespace"): [None, "", "other", 5],
    ("metadata", "labels"): [
        None,
        {},
        [],
        {"app": "x", "pcns.spoof": "y", "pcsa.spoof": "z"},
        {"projectcalico.org/namespace": "evil", "projectcalico.org/orchestrator": "no"},
        {"projectcalico.org/serviceaccount": "other", "z": "1", "a": "2"},
        {"k": 1},
        {"k": None},
        # As the CNI plugin writes them (sorted, with its three labels), and near misses.
        {"a": "1", **_OWN},
        {"a": "1", "pcns.x": "y", **_OWN},
        {"a": "1", **_OWN, "projectcalico.org/serviceaccount": "other"},
        {"a": "1", **_OWN, "projectcalico.org/orchestrator": "no"},
        {"a": "1", **_OWN, "projectcalico.org/namespace": "other"},
        {k: v for k, v in _OWN.items() if k != "projectcalico.org/serviceaccount"},
        {**_OWN, "a": "1"},
        {"": "e", **_OWN},
        {"pcsa.x": "y", **_OWN},
    ],
    ("metadata", "annotations"): [None, {}, {"b": "2", "a": "1"}, {"a": None}, "x", []],
    ("metadata", "generateName"): [None, "", "nginx-", 5],
    ("spec",): [None, [], {}],
    ("spec", "orchestrator"): ["k8s", "openstack", None, "", 5],
    ("spec", "node"): ["node-1", "", None, 5, "a/b", "a%b", "n--x"],
    ("spec", "pod"): ["pod-1", "", None, 5, "a/b", "p%2f"],
    ("spec", "endpoint"): ["eth0", "", None, 5, "e/1"],
    ("spec", "workload"): ["w", "", None, 5],
    ("spec", "ipNetworks"): [
        [],
        None,
        "10.0.0.1/32",
        ["10.0.0.1/24"],
        ["fd00::1/128"],
        ["010.0.0.1/32"],
        ["10.0.0.1/32", "fd00::2/128"],
        ["10.0.0.1/32", "10.0.0.2/32"],
        ["10.0.0.1/32\n"],
        ["10.0.0.1"],
        [5],
    ],
    ("spec", "ipNATs"): [None, [], {}, [{"internalIP": "10.0.0.1", "externalIP": "1.2.3.4"}]],
    ("spec", "ports"): [
        None,
        [],
        {},
        [{"name": "http", "protocol": "TCP", "port": 80}],
        [{"port": 80}],
        [{"name": "x", "port": 70000}],
        [{"name": "dns", "protocol": "UDP", "port": 53}, {"name": "", "port": 9}],
        [{"name": "b", "protocol": "SCTP", "port": 0}, {"name": "a", "port": 65535}],
        [{"name": "x", "protocol": "tcp", "port": 1}],
        [{"name": "x", "protocol": "6", "port": 1}],
        [{"name": "x", "protocol": ["TCP"], "port": 1}],
        [{"name": "x", "protocol": 0, "port": 1}],
        [{"name": "x", "port": True}],
        [{"name": 5, "port": 1}],
        [{"name": "x", "port": -1}],
        [{"name": "x", "port": 2**70}],
        ["x"],
    ],
    ("spec", "allowSpoofedSourcePrefixes"): [None, [], {}, ["10.0.0.0/8"], ["bad"]],
    ("spec", "ipv4Gateway"): [None, "", "10.0.0.1", "nope", 5],
    ("spec", "ipv6Gateway"): [None, "", "fe80::1", 5],
    ("spec", "serviceAccountName"): [None, "", "default", "other", 5],
    ("spec", "interfaceName"): [None, "", "cali123", 5],
    ("spec", "mac"): [
        None,
        "",
        "EE:EE:EE:EE:EE:EE",
        "ee-ee-ee-ee-ee-0A",
        "ee:ee:ee:ee:ee:ee\n",
        "nope",
        5,
    ],
    ("spec", "profiles"): [None, [], ["kns.a"], ["a", 5], "x", ["b", "a"]],
}
_PATHS = sorted(_FIELDS)
_ABSENT = object()


def cni_endpoint(namespace: str, pod: str, node: str, ip: str, labels: dict[str, str]) -> dict:
    """A WorkloadEndpoint as it is stored: what the CNI plugin writes, as etcd holds it."""
    resource = workload_endpoint_for_pod(node, namespace, pod, ip, labels)
    return json.loads(json.dumps(etcd_value_for(resource), sort_keys=True))


def changed(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``obj`` with the field at ``path`` set to ``value`` (removed for ``_ABSENT``)."""
    out = copy.deepcopy(obj)
    parent = out
    for part in path[:-1]:
        if not isinstance(parent.get(part), dict):
            return out  # that level was replaced by a change before
        parent = parent[part]
    if value is _ABSENT:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return out


def outcome(convert: Any, etcd_key: str, obj: dict[str, Any]) -> Any:
    """The updates as (key, msgpack bytes, JSON text, revision) — key order counts — or the
    error's type and message."""
    try:
        updates = convert(etcd_key, copy.deepcopy(obj))
    except InvalidResource as exc:
        return ("error", type(exc).__name__, str(exc))
    return [(u.key, msgpack.packb(u.value), json.dumps(u.value), u.revision) for u in updates]


def check(etcd_key: str, obj: dict[str, Any]) -> bool:
    """Both paths agree on ``obj``; whether the fast path answered by itself."""
    general = outcome(convert_etcd_kv_general, etcd_key, obj)
    assert outcome(convert_etcd_kv, etcd_key, obj) == general
    rest = etcd_key[len(V3_PREFIX) :].split("/")
    if len(rest) != 3 or "%" in etcd_key:
        return False
    fast = common_workload_endpoint(rest[1], rest[2], copy.deepcopy(obj))
    if fast is None:
        return False
    assert outcome(lambda *_: [fast], etcd_key, obj) == general
    return True


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    namespace = draw(st.one_of(st.just("web"), _TEXT.filter(bool)))
    pod = draw(st.one_of(st.just("nginx-abc"), _TEXT.filter(bool)))
    node = draw(st.one_of(st.just("node-1"), _TEXT.filter(bool)))
    labels = draw(st.dictionaries(_TEXT, _TEXT, max_size=4))
    ip = f"10.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}"
    try:
        obj = cni_endpoint(namespace, pod, node, ip, labels)
    except InvalidResource:
        obj = cni_endpoint("web", "nginx-abc", "node-1", ip, labels)
    etcd_key = etcd_key_for(obj)
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=4)):
        value = draw(st.one_of(st.sampled_from(_FIELDS[path]), st.just(_ABSENT), _ODD, _TEXT))
        obj = changed(obj, path, value)
    if draw(st.booleans()) and draw(st.booleans()):
        # Keys that do not match the object, or are not well-formed.
        etcd_key = draw(
            st.sampled_from(
                [
                    etcd_key + "/extra",
                    etcd_key.rsplit("/", 1)[0] + "/other",
                    etcd_key.rsplit("/", 2)[0] + "//" + etcd_key.rsplit("/", 1)[1],
                    f"{V3_PREFIX}workloadendpoints/{keys.escape('we/b')}/x",
                    f"{V3_PREFIX}workloadendpoints/" + etcd_key.rsplit("/", 1)[1],
                ]
            )
        )
    return etcd_key, obj


@settings(max_examples=400, deadline=None)
@given(endpoints())
def test_the_fast_path_gives_the_general_paths_answer(case: tuple[str, dict[str, Any]]) -> None:
    check(*case)


def test_cni_endpoints_take_the_fast_path_and_the_others_fall_back() -> None:
    """Positive control for the property above: the common shape is answered by the fast
    path (so the property compares something), and each kind of change the fast path leaves
    to the general one is still converted — or refused — as before."""
    rng = random.Random(14)
    base = cni_endpoint("web", "nginx-abc", "node-1", "10.1.2.3", {"app": "nginx"})
    etcd_key = etcd_key_for(base)
    assert check(etcd_key, base)
    fast = slow = 0
    for _ in range(1500):
        obj = base
        for path in rng.sample(_PATHS, rng.randint(1, 3)):
            obj = changed(obj, path, rng.choice([*_FIELDS[path], _ABSENT]))
        if check(etcd_key, obj):
            fast += 1
        else:
            slow += 1
    assert fast > 100 and slow > 100, (fast, slow)


def test_every_listed_change_alone() -> None:
    """Each value of the table above on the CNI plugin's shape, one at a time: none is left to
    chance, and both paths are taken."""
    base = cni_endpoint("web", "nginx-abc", "node-1", "10.1.2.3", {"app": "nginx"})
    taken = [
        check(etcd_key_for(base), changed(base, path, value))
        for path in _PATHS
        for value in [*_FIELDS[path], _ABSENT]
    ]
    assert 50 < sum(taken) < len(taken) - 50, (sum(taken), len(taken))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "ipNetworks"), ["10.0.0.1/32", "fd00::2/128"]),
        (("spec", "ports"), [{"name": "http", "protocol": "tcp", "port": 80}]),
        (("spec", "ipNATs"), [{"internalIP": "10.0.0.1", "externalIP": "1.2.3.4"}]),
        (("spec", "mac"), "nope"),
        (("metadata", "labels"), {"k": 1}),
        (("spec", "workload"), 5),
    ],
)
def test_shapes_left_to_the_general_path(path: tuple[str, ...], value: Any) -> None:
    base = cni_endpoint("web", "nginx-abc", "node-1", "10.1.2.3", {"app": "nginx"})
    obj = changed(base, path, value)
    assert common_workload_endpoint("web", base["metadata"]["name"], obj) is None
    assert not check(etcd_key_for(base), obj)
