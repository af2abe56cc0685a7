"""etcd v3 keys/values ↔ model updates (docs/model.md, "etcd layout").

Layout:

* v3 resources: ``/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>``, value =
  the v3 object's JSON;
* IPAM, in the older v1-style paths: blocks at ``/calico/ipam/v2/assignment/ipv4/block/<cidr>``
  and affinities at ``/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`` (``/`` in the CIDR written
  ``-``), values = AllocationBlock JSON / ``{"state", "deleted"}``. These are already model
  values: they are validated (as the IPAMBlock/BlockAffinity specs are) and passed on;
* ``/calico/ipam/v2/handle/…`` and everything else: not for Felix.

One watch on ``CALICO_ETCD_WATCH_PREFIX`` filtered by ``is_calico_etcd_key`` covers it all, so
that a single revision orders every change.

Deletions: ``convert_etcd_kv`` handles live values only. The etcd datastore keys its
``ResourceExpander`` by etcd key, so a delete event is ``expander.delete(etcd_key)``.
"""

from __future__ import annotations

import copy
from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    SERVER_METADATA_FIELDS,
    as_dict,
    canonical,
    resource_name,
    spec,
)
from typha.sync.convert.endpoints_fast import common_workload_endpoint
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.ipam import affinity_identity, affinity_value, block_value
from typha.sync.convert.kinds import API_VERSION_V3, KINDS, KINDS_BY_PLURAL
from typha.sync.convert.v3 import v3_to_updates

V3_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_BLOCK_PREFIX = "/calico/ipam/v2/assignment/"
IPAM_AFFINITY_PREFIX = "/calico/ipam/v2/host/"
IPAM_HANDLE_PREFIX = "/calico/ipam/v2/handle/"

# Where most listed keys are: their common shape has a fast path (endpoints_fast).
_WEP_PREFIX = f"{V3_PREFIX}{KINDS['WorkloadEndpoint'].plural}/"

CALICO_ETCD_WATCH_PREFIX = "/calico/"
# The sub-trees that hold anything Typha serves; all lie under CALICO_ETCD_WATCH_PREFIX.
CALICO_ETCD_PREFIXES: tuple[str, ...] = (V3_PREFIX, IPAM_BLOCK_PREFIX, IPAM_AFFINITY_PREFIX)


def is_calico_etcd_key(etcd_key: str) -> bool:
    """Whether a key under the watch prefix is one Typha converts (cheap filter for the watch)."""
    return etcd_key.startswith(CALICO_ETCD_PREFIXES)


def _parse_ipam_key(etcd_key: str) -> bool:
    """Whether ``etcd_key`` is a well-formed block or affinity path."""
    parts = etcd_key.split("/")
    # ['', 'calico', 'ipam', 'v2', 'assignment', 'ipv4', 'block', '<cidr>']
    if etcd_key.startswith(IPAM_BLOCK_PREFIX):
        return (
            len(parts) == 8
            and parts[5] in ("ipv4", "ipv6")
            and parts[6] == "block"
            and bool(parts[7])
        )
    # ['', 'calico', 'ipam', 'v2', 'host', '<node>', 'ipv4', 'block', '<cidr>']
    return (
        len(parts) == 9
        and parts[6] in ("ipv4", "ipv6")
        and parts[7] == "block"
        and bool(parts[5] and parts[8])
    )


def parse_v3_etcd_key(etcd_key: str) -> tuple[str, str, str]:
    """``<V3_PREFIX><plural>/[<namespace>/]<name>`` → (kind, namespace, name)."""
    rest = etcd_key[len(V3_PREFIX) :].split("/")
    info = KINDS_BY_PLURAL.get(rest[0])
    if info is None:
        raise InvalidResource(f"unknown resource plural {rest[0]!r}", resource=etcd_key)
    want = 3 if info.namespaced else 2
    if len(rest) != want or not all(rest):
        shape = "<namespace>/<name>" if info.namespaced else "<name>"
        raise InvalidResource(
            f"a {info.kind} key is {V3_PREFIX}{info.plural}/{shape}", resource=etcd_key
        )
    namespace = keys.unescape(rest[1]) if info.namespaced else ""
    return info.kind, namespace, keys.unescape(rest[-1])


def convert_etcd_kv(etcd_key: str, obj: dict[str, Any]) -> list[Update]:
    """One etcd key and its parsed JSON value → model updates ([] for keys Felix does not use).

    For v3 resources the object must agree with its key (kind, namespace, name); a missing
    ``kind``/``apiVersion`` is filled in from the key.
    """
    if etcd_key.startswith(_WEP_PREFIX):
        namespace, _, name = etcd_key[len(_WEP_PREFIX) :].partition("/")
        # Escaped segments ("%2f", "%25") and malformed keys go the general way.
        if name and "/" not in name and "%" not in namespace and "%" not in name:
            update = common_workload_endpoint(namespace, name, obj)
            if update is not None:
                return [update]
    return convert_etcd_kv_general(etcd_key, obj)


def convert_etcd_kv_general(etcd_key: str, obj: dict[str, Any]) -> list[Update]:
    """``convert_etcd_kv`` without the WorkloadEndpoints' fast path: the reference that path
    is tested against, and what it falls back to."""
    if etcd_key.startswith(V3_PREFIX):
        kind, namespace, name = parse_v3_etcd_key(etcd_key)
        if not isinstance(obj, dict):
            raise InvalidResource(
                f"expected a JSON object, got {type(obj).__name__}", resource=etcd_key
            )
        resource = dict(obj)
        resource.setdefault("apiVersion", API_VERSION_V3)
        if resource.setdefault("kind", kind) != kind:
            raise InvalidResource(
                f"kind {resource['kind']!r} does not match the key ({kind})", resource=etcd_key
            )
        meta = as_dict(resource.get("metadata"), "metadata")
        if meta.get("name") != name:
            raise InvalidResource(
                f"metadata.name {meta.get('name')!r} does not match the key", resource=etcd_key
            )
        if KINDS[kind].namespaced and meta.get("namespace") != namespace:
            raise InvalidResource(
                f"metadata.namespace {meta.get('namespace')!r} does not match the key",
                resource=etcd_key,
            )
        return v3_to_updates(resource)
    if etcd_key.startswith((IPAM_BLOCK_PREFIX, IPAM_AFFINITY_PREFIX)):
        if not _parse_ipam_key(etcd_key):
            return []
        if not isinstance(obj, dict):
            raise InvalidResource(
                f"expected a JSON object, got {type(obj).__name__}", resource=etcd_key
            )
        # Checked like the IPAMBlock/BlockAffinity resources (the same JSON under "spec"), so
        # that a broken block never reaches the node clients' route calculation.
        try:
            if etcd_key.startswith(IPAM_AFFINITY_PREFIX):
                return [Update(etcd_key, affinity_value(obj))]
            value = block_value(obj)
            if value["cidr"] != _ipam_key_cidr(etcd_key):
                raise InvalidResource(f"cidr {value['cidr']!r} does not match the key")
        except InvalidResource as exc:
            raise exc.in_resource(etcd_key) from None
        return [Update(etcd_key, value)]
    return []


def _ipam_key_cidr(etcd_key: str) -> str:
    """The CIDR in a block key, whose last segment writes ``/`` as ``-``."""
    net, _, plen = etcd_key.rsplit("/", 1)[1].rpartition("-")
    return f"{net}/{plen}"


def etcd_key_for(resource: dict[str, Any]) -> str:
    """Where Calico stores a v3 resource in etcd. IPAMBlock and BlockAffinity map to their
    v1-style IPAM paths (write ``etcd_value_for`` there, not the v3 object)."""
    kind = resource.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        raise InvalidResource(f"unknown kind {kind!r}", field="kind")
    if kind == "IPAMBlock":
        return keys.block_key(block_value(spec(resource))["cidr"])
    if kind == "BlockAffinity":
        node, cidr = affinity_identity(spec(resource))
        return keys.block_affinity_key(node, cidr)
    name = resource_name(resource)
    meta = as_dict(resource.get("metadata"), "metadata")
    if info.namespaced:
        namespace = meta.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            raise InvalidResource("required", field="metadata.namespace")
        return f"{V3_PREFIX}{info.plural}/{keys.escape(namespace)}/{keys.escape(name)}"
    return f"{V3_PREFIX}{info.plural}/{keys.escape(name)}"


def etcd_value_for(resource: dict[str, Any]) -> dict[str, Any]:
    """The JSON object to store at ``etcd_key_for(resource)``: the v3 object without server
    metadata (etcd's mod revision is the resourceVersion), or the v1-style IPAM value."""
    kind = resource.get("kind")
    if kind == "IPAMBlock":
        return block_value(spec(resource))
    if kind == "BlockAffinity":
        return affinity_value(spec(resource))
    obj = copy.deepcopy(resource)
    obj.setdefault("apiVersion", API_VERSION_V3)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for f in SERVER_METADATA_FIELDS:
            meta.pop(f, None)
    return canonical(obj)
