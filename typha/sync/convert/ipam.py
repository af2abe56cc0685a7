"""IP pools and IPAM blocks/affinities → model keys.

IPPool value (always all keys, in this order)::

    {"cidr": str, "ipip": "tunl0" | "", "ipip_mode": "always" | "cross-subnet" | "",
     "vxlan_mode": "always" | "cross-subnet" | "", "masquerade": bool, "ipam": bool,
     "disabled": bool, "disableBGPExport": bool, "assignment_mode": "Automatic" | "Manual",
     "allowed_uses": [str]}

``ipam`` is ``not disabled`` (the pool hands out addresses).  As in libcalico-go's model, "never"
is the empty string (its ``encap.Never``), and ``allowed_uses`` is the spec's list as given,
absent when the spec has none (Felix reads an absent list as Workload and Tunnel).

Block value: the AllocationBlock JSON (``block_value``); affinity value: ``{"state": str,
"deleted": bool}``.
"""

from __future__ import annotations

from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    as_dict,
    as_list,
    normalize_cidr,
    opt_bool,
    opt_int,
    opt_str,
    req_str,
    resource_name,
    spec,
    str_list,
    str_map,
    type_name,
)
from typha.sync.convert.errors import InvalidResource

_NEVER = ""  # libcalico-go's encap.Never
_ENCAP_MODES = {"Always": "always", "CrossSubnet": "cross-subnet", "Never": _NEVER, "": _NEVER}
_ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
_AFFINITY_STATES = ("confirmed", "pending", "pendingDeletion")


def _encap(value: object, field: str) -> str:
    text = opt_str(value, field)
    mode = _ENCAP_MODES.get(text)
    if mode is None:
        raise InvalidResource(f"must be Always, CrossSubnet or Never (got {text!r})", field=field)
    return mode


def ip_pool_updates(resource: dict[str, Any]) -> list[Update]:
    resource_name(resource)
    s = spec(resource)
    cidr = normalize_cidr(s.get("cidr"), "spec.cidr")
    ipip_mode = _encap(s.get("ipipMode"), "spec.ipipMode")
    vxlan_mode = _encap(s.get("vxlanMode"), "spec.vxlanMode")
    if ipip_mode != _NEVER and vxlan_mode != _NEVER:
        raise InvalidResource(
            "ipipMode and vxlanMode cannot both be enabled", field="spec.vxlanMode"
        )
    is_v6 = ":" in cidr
    if is_v6 and ipip_mode != _NEVER:
        raise InvalidResource("IPIP is not supported on an IPv6 pool", field="spec.ipipMode")
    block_size = opt_int(s.get("blockSize"), "spec.blockSize")
    if block_size is not None:
        lo, hi = (116, 128) if is_v6 else (20, 32)
        if not lo <= block_size <= hi:
            raise InvalidResource(f"must be in {lo}-{hi}", field="spec.blockSize")
        if block_size < int(cidr.rsplit("/", 1)[1]):
            raise InvalidResource("blocks cannot be bigger than the pool", field="spec.blockSize")
    disabled = opt_bool(s.get("disabled"), "spec.disabled")
    allowed = str_list(s.get("allowedUses"), "spec.allowedUses")
    for i, use in enumerate(allowed):
        if use not in _ALLOWED_USES:
            raise InvalidResource(f"unknown use {use!r}", field=f"spec.allowedUses[{i}]")
    assignment = opt_str(s.get("assignmentMode"), "spec.assignmentMode") or "Automatic"
    if assignment not in ("Automatic", "Manual"):
        raise InvalidResource("must be Automatic or Manual", field="spec.assignmentMode")
    value: dict[str, Any] = {
        "cidr": cidr,
        "ipip": "tunl0" if ipip_mode != _NEVER else "",
        "ipip_mode": ipip_mode,
        "vxlan_mode": vxlan_mode,
        "masquerade": opt_bool(s.get("natOutgoing"), "spec.natOutgoing"),
        "ipam": not disabled,
        "disabled": disabled,
        "disableBGPExport": opt_bool(s.get("disableBGPExport"), "spec.disableBGPExport"),
        "assignment_mode": assignment,
    }
    if allowed:
        value["allowed_uses"] = allowed
    return [Update(keys.ip_pool_key(cidr), value)]


def _block_size(cidr: str) -> int:
    prefix = int(cidr.rsplit("/", 1)[1])
    return 2 ** ((128 if ":" in cidr else 32) - prefix)


def block_value(s: dict[str, Any]) -> dict[str, Any]:
    """An IPAMBlock spec (same field names as the etcd AllocationBlock JSON) → block value::

    {"cidr", "affinity": str | None, "strictAffinity": bool, "allocations": [int | None],
     "unallocated": [int], "attributes": [{"handle_id": str | None, "secondary": {…}}],
     "deleted": bool, "sequenceNumber": int, "sequenceNumberForAllocation": {str: int} | None}
    """
    cidr = normalize_cidr(s.get("cidr"), "spec.cidr", strict=True)
    size = _block_size(cidr)
    allocations = as_list(s.get("allocations"), "spec.allocations")
    if allocations and len(allocations) != size:
        raise InvalidResource(f"must have {size} entries for {cidr}", field="spec.allocations")
    n_attributes = len(as_list(s.get("attributes"), "spec.attributes"))
    for i, a in enumerate(allocations):
        if a is not None and (isinstance(a, bool) or not isinstance(a, int)):
            raise InvalidResource(
                f"expected an integer or null, got {type_name(a)}", field=f"spec.allocations[{i}]"
            )
        if a is not None and not 0 <= a < n_attributes:
            raise InvalidResource(
                f"must index spec.attributes (0-{n_attributes - 1})",
                field=f"spec.allocations[{i}]",
            )
    unallocated = as_list(s.get("unallocated"), "spec.unallocated")
    for i, u in enumerate(unallocated):
        if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < size:
            raise InvalidResource(
                f"must be an ordinal in 0-{size - 1}", field=f"spec.unallocated[{i}]"
            )
    attributes = []
    for i, attr in enumerate(as_list(s.get("attributes"), "spec.attributes")):
        afield = f"spec.attributes[{i}]"
        attr = as_dict(attr, afield)
        handle = attr.get("handle_id")
        if handle is not None and not isinstance(handle, str):
            raise InvalidResource("expected a string or null", field=f"{afield}.handle_id")
        secondary = str_map(attr.get("secondary"), f"{afield}.secondary")
        attributes.append({"handle_id": handle, "secondary": secondary})
    affinity = s.get("affinity")
    if affinity is not None and not isinstance(affinity, str):
        raise InvalidResource("expected a string or null", field="spec.affinity")
    # Absent stays null, as Go's nil map marshals (Calico Typha sends null for a Kubernetes
    # IPAMBlock without the field); an empty map stays {}.
    raw_seq = s.get("sequenceNumberForAllocation")
    seq_for_alloc = as_dict(raw_seq, "spec.sequenceNumberForAllocation")
    return {
        "cidr": cidr,
        "affinity": affinity,
        "strictAffinity": opt_bool(s.get("strictAffinity"), "spec.strictAffinity"),
        "allocations": list(allocations),
        "unallocated": list(unallocated),
        "attributes": attributes,
        "deleted": opt_bool(s.get("deleted"), "spec.deleted"),
        "sequenceNumber": opt_int(s.get("sequenceNumber"), "spec.sequenceNumber") or 0,
        "sequenceNumberForAllocation": None
        if raw_seq is None
        else {
            k: opt_int(seq_for_alloc[k], f"spec.sequenceNumberForAllocation.{k}")
            for k in sorted(seq_for_alloc)
        },
    }


def ipam_block_updates(resource: dict[str, Any]) -> list[Update]:
    resource_name(resource)
    value = block_value(spec(resource))
    return [Update(keys.block_key(value["cidr"]), value)]


def _deleted_flag(value: object, field: str) -> bool:
    # The CRD declares ``deleted`` as a string ("true"/"false") for compatibility; accept both.
    if isinstance(value, str):
        if value.lower() not in ("true", "false", ""):
            raise InvalidResource(f"must be true or false (got {value!r})", field=field)
        return value.lower() == "true"
    return opt_bool(value, field)


def affinity_identity(s: dict[str, Any]) -> tuple[str, str]:
    """(node, cidr) of a BlockAffinity spec."""
    return req_str(s.get("node"), "spec.node"), normalize_cidr(
        s.get("cidr"), "spec.cidr", strict=True
    )


def affinity_value(s: dict[str, Any]) -> dict[str, Any]:
    state = req_str(s.get("state"), "spec.state")
    if state not in _AFFINITY_STATES:
        raise InvalidResource(f"must be one of {', '.join(_AFFINITY_STATES)}", field="spec.state")
    return {"state": state, "deleted": _deleted_flag(s.get("deleted"), "spec.deleted")}


def block_affinity_updates(resource: dict[str, Any]) -> list[Update]:
    resource_name(resource)
    s = spec(resource)
    node, cidr = affinity_identity(s)
    return [Update(keys.block_affinity_key(node, cidr), affinity_value(s))]
