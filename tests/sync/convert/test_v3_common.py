"""Every v3 kind: generic validation, determinism, and what msgpack can carry."""

from __future__ import annotations

import copy

import pytest

from tests.sync.convert.helpers import ALLOW_6379, NODE, V3, WEP, one, packed, res
from typha.model import keys
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- generic validation ---------------------------------------------------------------------------


def test_missing_name_namespace_kind_and_api_version() -> None:
    with pytest.raises(InvalidResource, match=r"metadata\.name: required"):
        v3_to_updates({"apiVersion": V3, "kind": "Tier", "metadata": {}, "spec": {}})
    with pytest.raises(InvalidResource, match=r"metadata\.namespace: required"):
        v3_to_updates(res("NetworkPolicy", "p"))
    with pytest.raises(InvalidResource, match="unknown kind 'Widget'"):
        v3_to_updates(res("Widget", "w"))
    with pytest.raises(InvalidResource, match="apiVersion"):
        v3_to_updates({**res("Tier", "t"), "apiVersion": "v1"})
    with pytest.raises(InvalidResource, match="expected a mapping"):
        v3_to_updates({**res("Tier", "t"), "spec": ["x"]})
    with pytest.raises(InvalidResource, match="expected a mapping"):
        v3_to_updates("Tier")  # type: ignore[arg-type]


def test_input_is_not_modified() -> None:
    policy = copy.deepcopy(ALLOW_6379)
    v3_to_updates(policy)
    assert policy == ALLOW_6379


# --- determinism ----------------------------------------------------------------------------------


def test_determinism_same_input_same_bytes() -> None:
    for resource in (ALLOW_6379, WEP, NODE):
        assert packed(v3_to_updates(resource)) == packed(v3_to_updates(copy.deepcopy(resource)))


def test_label_order_does_not_change_bytes() -> None:
    reordered = copy.deepcopy(WEP)
    reordered["metadata"]["labels"] = dict(reversed(list(WEP["metadata"]["labels"].items())))
    reordered["metadata"]["annotations"] = {"a": "1", "b": "2"}
    assert packed(v3_to_updates(reordered)) == packed(v3_to_updates(WEP))
    node = copy.deepcopy(NODE)
    node["spec"] = dict(reversed(list(NODE["spec"].items())))
    assert packed(v3_to_updates(node)) == packed(v3_to_updates(NODE))


def test_every_produced_key_classifies() -> None:
    for resource in (ALLOW_6379, WEP, NODE, res("Tier", "t"), res("Profile", "p")):
        for update in v3_to_updates(resource):
            assert keys.classify(update.key) is not keys.KeyKind.UNKNOWN


def test_passed_on_objects_refuse_integers_msgpack_cannot_carry() -> None:
    """Found by the converter fuzzer: a Node (passed on whole) with a 65-bit integer
    anywhere in it converted, and only the feed's encoding failed."""
    node = res("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}})
    assert v3_to_updates(node)  # the control
    node["spec"]["addresses"] = [{"address": "10.0.0.1", "type": 2**64}]
    with pytest.raises(InvalidResource, match="out of range"):
        v3_to_updates(node)
    node["spec"]["addresses"] = [{"address": "10.0.0.1", "type": 2**64 - 1}]  # uint64 fits
    assert v3_to_updates(node)


def test_no_labels_is_null_like_go_and_empty_labels_stay_empty() -> None:
    """A HostEndpoint or global NetworkSet without labels: Calico Typha sends null (Go's nil
    map), with an empty map {}; a Kubernetes apiserver drops empty maps, so there it is null."""
    hep = res("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0"})
    assert one(hep).value["labels"] is None
    hep["metadata"]["labels"] = {}
    assert one(hep).value["labels"] == {}
    gns = res("GlobalNetworkSet", "g", {"nets": ["192.0.2.0/24"]})
    assert one(gns).value["labels"] is None
    gns["metadata"]["labels"] = {"a": "b"}
    assert one(gns).value["labels"] == {"a": "b"}
