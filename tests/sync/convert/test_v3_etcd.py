"""etcd keys and values ↔ v3 resources and model updates."""

from __future__ import annotations

import pytest

from tests.sync.convert.helpers import ALLOW_6379, NODE, WEP, res
from typha.sync.base import Update
from typha.sync.convert import (
    CALICO_ETCD_PREFIXES,
    CALICO_ETCD_WATCH_PREFIX,
    InvalidResource,
    convert_etcd_kv,
    etcd_key_for,
    etcd_value_for,
    is_calico_etcd_key,
    v3_to_updates,
)

# --- etcd -----------------------------------------------------------------------------------------


def test_etcd_prefixes_and_filter() -> None:
    assert CALICO_ETCD_WATCH_PREFIX == "/calico/"
    assert all(p.startswith(CALICO_ETCD_WATCH_PREFIX) for p in CALICO_ETCD_PREFIXES)
    assert is_calico_etcd_key("/calico/resources/v3/projectcalico.org/tiers/default")
    assert is_calico_etcd_key("/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26")
    assert is_calico_etcd_key("/calico/ipam/v2/host/node1/ipv4/block/10.0.0.0-26")
    assert not is_calico_etcd_key("/calico/ipam/v2/handle/k8s-pod-network.abc")
    assert not is_calico_etcd_key("/calico/felix/v2/status/node1")


def test_convert_etcd_kv_v3_resource() -> None:
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/myproject/allow-tcp-6379"
    assert etcd_key_for(ALLOW_6379) == key
    value = etcd_value_for(ALLOW_6379)
    assert convert_etcd_kv(key, value) == v3_to_updates(ALLOW_6379)
    # kind and apiVersion come from the key when the stored object lacks them
    bare = {k: v for k, v in value.items() if k not in ("kind", "apiVersion")}
    assert convert_etcd_kv(key, bare) == v3_to_updates(ALLOW_6379)


def test_convert_etcd_kv_rejects_mismatches() -> None:
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/myproject/other-name"
    with pytest.raises(InvalidResource, match=r"metadata\.name"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/otherns/allow-tcp-6379"
    with pytest.raises(InvalidResource, match=r"metadata\.namespace"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    key = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/allow-tcp-6379"
    with pytest.raises(InvalidResource, match="does not match the key"):
        convert_etcd_kv(key, etcd_value_for(ALLOW_6379))
    with pytest.raises(InvalidResource, match="unknown resource plural"):
        convert_etcd_kv("/calico/resources/v3/projectcalico.org/widgets/x", {})
    with pytest.raises(InvalidResource, match="<namespace>/<name>"):
        convert_etcd_kv("/calico/resources/v3/projectcalico.org/networkpolicies/x", {})


def test_convert_etcd_kv_ipam_and_others() -> None:
    block_key = "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    block = {"cidr": "10.0.1.0/26", "affinity": "host:node1", "allocations": [None] * 64}
    (update,) = convert_etcd_kv(block_key, block)
    assert update.key == block_key
    assert {k: update.value[k] for k in block} == block  # the rest is filled in with defaults
    assert update.value["unallocated"] == [] and update.value["deleted"] is False
    # Checked like the IPAMBlock spec: a broken block never reaches the node clients.
    for bad, message in [
        ({**block, "cidr": "10.0.1.0/33"}, "cidr"),
        ({**block, "cidr": "10.0.2.0/26"}, "does not match the key"),
        ({**block, "allocations": [None] * 3}, "64 entries"),
        ({**block, "affinity": 7}, "affinity"),
        # Found by atheris: msgpack cannot carry it, and the feed would have failed encoding it.
        ({**block, "allocations": [3 * 10**95] + [None] * 63}, "allocations"),
        ({**block, "allocations": [0] + [None] * 63}, "must index spec.attributes"),
        ({**block, "sequenceNumber": 2**64}, "out of range"),
    ]:
        with pytest.raises(InvalidResource, match=message) as err:
            convert_etcd_kv(block_key, bad)
        assert err.value.resource == block_key
    with pytest.raises(InvalidResource, match="state"):
        convert_etcd_kv("/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26", {"state": "weird"})
    aff_key = "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26"
    assert convert_etcd_kv(aff_key, {"state": "confirmed", "deleted": False}) == [
        Update(aff_key, {"state": "confirmed", "deleted": False})
    ]
    assert convert_etcd_kv("/calico/ipam/v2/handle/k8s-pod-network.abc", {"block": {}}) == []
    assert convert_etcd_kv("/calico/ipam/v2/config", {"strictAffinity": False}) == []
    assert convert_etcd_kv("/calico/felix/v2/whatever", {}) == []
    assert convert_etcd_kv("/calico/ipam/v2/assignment/ipv4/block", {}) == []


def test_etcd_key_for_ipam_objects_uses_v1_paths() -> None:
    block = res("IPAMBlock", "10-0-1-0-26", {"cidr": "10.0.1.0/26", "affinity": "host:node1"})
    assert etcd_key_for(block) == "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    assert etcd_value_for(block)["affinity"] == "host:node1"
    assert convert_etcd_kv(etcd_key_for(block), etcd_value_for(block)) == v3_to_updates(block)
    affinity = res(
        "BlockAffinity",
        "node1-10-0-1-0-26",
        {"state": "confirmed", "node": "node1", "cidr": "10.0.1.0/26"},
    )
    assert etcd_key_for(affinity) == "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26"
    assert etcd_value_for(affinity) == {"state": "confirmed", "deleted": False}


def test_etcd_key_for_kinds() -> None:
    assert (
        etcd_key_for(res("BGPFilter", "f")) == "/calico/resources/v3/projectcalico.org/BGPFilters/f"
    )
    assert etcd_key_for(WEP) == (
        "/calico/resources/v3/projectcalico.org/workloadendpoints/web/node--1-k8s-nginx--abc-eth0"
    )
    value = etcd_value_for({**NODE})
    assert "resourceVersion" not in value["metadata"]
    with pytest.raises(InvalidResource, match="unknown kind"):
        etcd_key_for(res("Widget", "w"))
    with pytest.raises(InvalidResource, match="namespace"):
        etcd_key_for(res("NetworkPolicy", "p"))
