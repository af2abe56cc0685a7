"""v3 IPPool, IPAMBlock and BlockAffinity → IPAM model keys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync.convert.helpers import one, res
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- IPAM -----------------------------------------------------------------------------------------


def test_ip_pool() -> None:
    update = one(
        res(
            "IPPool",
            "default-ipv4-ippool",
            {"cidr": "192.168.0.0/16", "ipipMode": "CrossSubnet", "natOutgoing": True},
        )
    )
    assert update == Update(
        "/calico/v1/ipam/v4/pool/192.168.0.0-16",
        {
            "cidr": "192.168.0.0/16",
            "ipip": "tunl0",
            "ipip_mode": "cross-subnet",
            "vxlan_mode": "",
            "masquerade": True,
            "ipam": True,
            "disabled": False,
            "disableBGPExport": False,
            "assignment_mode": "Automatic",
        },
    )
    # libcalico-go's spelling: "never" is "", and allowedUses passes through only when given.
    uses = one(res("IPPool", "lb", {"cidr": "10.9.0.0/16", "allowedUses": ["LoadBalancer"]}))
    assert uses.value["allowed_uses"] == ["LoadBalancer"] and uses.value["ipip_mode"] == ""
    v6 = one(res("IPPool", "v6", {"cidr": "fd00:10::/48", "vxlanMode": "Always", "disabled": True}))
    assert v6.key == "/calico/v1/ipam/v6/pool/fd00:10::-48"
    assert v6.value["vxlan_mode"] == "always" and v6.value["ipip"] == ""
    assert v6.value["ipam"] is False and v6.value["disabled"] is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, r"spec\.cidr: required"),
        ({"cidr": "192.168.0.0/33"}, "is not a CIDR"),
        ({"cidr": "10.0.0.0/8", "ipipMode": "Always", "vxlanMode": "Always"}, "both"),
        ({"cidr": "10.0.0.0/8", "ipipMode": "Sometimes"}, "ipipMode"),
        ({"cidr": "10.0.0.0/8", "blockSize": 40}, "blockSize"),
        ({"cidr": "10.0.0.0/24", "blockSize": 20}, "bigger than the pool"),
        ({"cidr": "10.0.0.0/8", "natOutgoing": "yes"}, "expected a boolean"),
    ],
)
def test_ip_pool_invalid(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        v3_to_updates(res("IPPool", "p", spec))


def test_ipam_block_and_affinity() -> None:
    allocations: list[int | None] = [None] * 64
    allocations[0] = 0
    block = res(
        "IPAMBlock",
        "10-0-1-0-26",
        {
            "cidr": "10.0.1.0/26",
            "affinity": "host:node1",
            "allocations": allocations,
            "unallocated": list(range(1, 64)),
            "attributes": [{"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1"}}],
        },
    )
    update = one(block)
    assert update.key == "/calico/ipam/v2/assignment/ipv4/block/10.0.1.0-26"
    assert update.value == {
        "cidr": "10.0.1.0/26",
        "affinity": "host:node1",
        "strictAffinity": False,
        "allocations": allocations,
        "unallocated": list(range(1, 64)),
        "attributes": [{"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1"}}],
        "deleted": False,
        "sequenceNumber": 0,
        "sequenceNumberForAllocation": None,  # absent in the spec: null, as Go's nil map
    }
    with_seq = {**block["spec"], "sequenceNumberForAllocation": {"0": 3}}
    assert one(res("IPAMBlock", "b", with_seq)).value["sequenceNumberForAllocation"] == {"0": 3}
    affinity = res(
        "BlockAffinity",
        "node1-10-0-1-0-26",
        {"state": "confirmed", "node": "node1", "cidr": "10.0.1.0/26", "deleted": "false"},
    )
    assert one(affinity) == Update(
        "/calico/ipam/v2/host/node1/ipv4/block/10.0.1.0-26",
        {"state": "confirmed", "deleted": False},
    )
    with pytest.raises(InvalidResource, match="64 entries"):
        v3_to_updates(res("IPAMBlock", "b", {"cidr": "10.0.1.0/26", "allocations": [None]}))
    with pytest.raises(InvalidResource, match=r"spec\.state"):
        v3_to_updates(res("BlockAffinity", "a", {"node": "n", "cidr": "10.0.0.0/26", "state": "x"}))
