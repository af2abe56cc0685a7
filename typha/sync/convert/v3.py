"""projectcalico.org/v3 resources → model key updates (the syncer's update processors).

``v3_to_updates`` returns the complete set of model keys a resource currently produces, each with
its value. Keys the resource produced before but no longer does are *not* listed: the caller
feeds the result through ``typha.sync.base.ResourceExpander`` (keyed by the resource's identity),
which emits their deletions, and calls ``ResourceExpander.delete`` when the resource itself is
deleted. The exception is a resource that still exists but is filtered out of the model (a
WorkloadEndpoint without IPs): it returns its single key with value ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    as_dict,
    describe,
    passthrough_object,
    resource_name,
    resource_namespace,
)
from typha.sync.convert.config import cluster_information_updates, felix_configuration_updates
from typha.sync.convert.endpoints import host_endpoint_updates, workload_endpoint_updates
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.ipam import block_affinity_updates, ip_pool_updates, ipam_block_updates
from typha.sync.convert.kinds import API_VERSION_V3, KINDS
from typha.sync.convert.netsets import network_set_updates
from typha.sync.convert.node import node_updates
from typha.sync.convert.policy import POLICY_KINDS, policy_updates, profile_updates, tier_updates

# Kinds Felix/confid receive unchanged, as ResourceKey{Kind, Namespace, Name}.
PASSTHROUGH_KINDS = (
    "BGPConfiguration",
    "BGPPeer",
    "BGPFilter",
    "CalicoNodeStatus",
    "LiveMigration",
)
# Kinds we know but that no syncer sends (IPAM bookkeeping, controller config).
IGNORED_KINDS = ("IPReservation", "KubeControllersConfiguration", "IPAMConfiguration", "IPAMConfig")


def _passthrough(resource: dict[str, Any]) -> list[Update]:
    info = KINDS[resource["kind"]]
    name = resource_name(resource)
    namespace = resource_namespace(resource) if info.namespaced else ""
    return [
        Update(
            keys.resource_key(info.plural, name, namespace), passthrough_object(resource, info.kind)
        )
    ]


def _ignored(resource: dict[str, Any]) -> list[Update]:
    resource_name(resource)
    return []


_HANDLERS: dict[str, Callable[[dict[str, Any]], list[Update]]] = {
    **dict.fromkeys(POLICY_KINDS, policy_updates),
    **dict.fromkeys(PASSTHROUGH_KINDS, _passthrough),
    **dict.fromkeys(IGNORED_KINDS, _ignored),
    "WorkloadEndpoint": workload_endpoint_updates,
    "HostEndpoint": host_endpoint_updates,
    "Tier": tier_updates,
    "Profile": profile_updates,
    "NetworkSet": network_set_updates,
    "GlobalNetworkSet": network_set_updates,
    "IPPool": ip_pool_updates,
    "IPAMBlock": ipam_block_updates,
    "BlockAffinity": block_affinity_updates,
    "Node": node_updates,
    "FelixConfiguration": felix_configuration_updates,
    "ClusterInformation": cluster_information_updates,
}


def v3_to_updates(resource: dict[str, Any]) -> list[Update]:
    """Convert one projectcalico.org/v3 resource (a dict as stored in etcd / returned by the API)
    into model key updates.

    Raises ``InvalidResource`` (naming the resource and field) for unknown kinds, wrong types,
    missing names, bad CIDRs, malformed selectors and the other checks of the kind's converter.
    The input is not modified.
    """
    if not isinstance(resource, dict):
        raise InvalidResource(f"expected a mapping, got {type(resource).__name__}")
    # The label ("Kind ns/name") is only for errors: made when one is raised (handlers do not
    # modify the resource), not for each of the 20,000 endpoints of a list.
    api_version = resource.get("apiVersion")
    if api_version not in (None, API_VERSION_V3):
        raise InvalidResource(
            f"apiVersion must be {API_VERSION_V3} (got {api_version!r})",
            resource=describe(resource),
        )
    kind = resource.get("kind")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise InvalidResource(f"unknown kind {kind!r}", field="kind", resource=describe(resource))
    try:
        as_dict(resource.get("metadata"), "metadata")
        if KINDS[kind].namespaced:
            resource_namespace(resource)
        return handler(resource)
    except InvalidResource as exc:
        raise exc.in_resource(describe(resource)) from None
