"""Calico model keys: the path strings Felix's syncer emits, and which syncer types use each.

Keys are the "default path" strings of libcalico-go's model keys (docs/model.md, "Key table").
We use Calico v3.32's modern policy key form only: ``/calico/v1/policy/<Kind>/<namespace>/<name>``
(the namespace is empty for global kinds). Names inside paths are escaped: ``%`` → ``%25`` and
``/`` → ``%2f``.

Values are msgpack-native (dicts, lists, strings, numbers, bools, None) using the JSON field
names Typha's JSON values use. ``None`` as a value means "deleted".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class SyncerType(enum.StrEnum):
    """The four syncer types a Typha serves (docs/model.md, "Syncer types")."""

    FELIX = "felix"
    BGP = "bgp"
    TUNNEL_IP_ALLOCATION = "tunnel-ip-allocation"
    NODE_STATUS = "node-status"


ALL_SYNCER_TYPES: tuple[SyncerType, ...] = tuple(SyncerType)


def escape(name: str) -> str:
    """Escape one path segment the way libcalico-go does."""
    return name.replace("%", "%25").replace("/", "%2f")


def unescape(segment: str) -> str:
    return segment.replace("%2f", "/").replace("%2F", "/").replace("%25", "%")


def cidr_segment(cidr: str) -> str:
    """``10.0.1.0/26`` → ``10.0.1.0-26`` (how IPAM paths spell a CIDR)."""
    return cidr.replace("/", "-")


def cidr_from_segment(segment: str) -> str:
    addr, _, length = segment.rpartition("-")
    return f"{addr}/{length}"


# --- Path builders -------------------------------------------------------------------------------


def workload_endpoint_key(host: str, orchestrator: str, workload: str, endpoint: str) -> str:
    return (
        f"/calico/v1/host/{escape(host)}/workload/{escape(orchestrator)}/"
        f"{escape(workload)}/endpoint/{escape(endpoint)}"
    )


def host_endpoint_key(host: str, endpoint: str) -> str:
    return f"/calico/v1/host/{escape(host)}/endpoint/{escape(endpoint)}"


def policy_key(kind: str, namespace: str, name: str) -> str:
    """Modern (v3.32) policy key: kind, namespace ("" for global kinds), name."""
    return f"/calico/v1/policy/{kind}/{escape(namespace)}/{escape(name)}"


def tier_key(name: str) -> str:
    return f"/calico/v1/policy/tier/{escape(name)}/metadata"


def profile_rules_key(name: str) -> str:
    return f"/calico/v1/policy/profile/{escape(name)}/rules"


def profile_labels_key(name: str) -> str:
    return f"/calico/v1/policy/profile/{escape(name)}/labels"


def network_set_key(name: str) -> str:
    """A namespaced network set's name is ``<ns>/<name>`` (escaped into one segment)."""
    return f"/calico/v1/netset/{escape(name)}"


def ip_pool_key(cidr: str) -> str:
    version = 6 if ":" in cidr else 4
    return f"/calico/v1/ipam/v{version}/pool/{cidr_segment(cidr)}"


def block_key(cidr: str) -> str:
    version = 6 if ":" in cidr else 4
    return f"/calico/ipam/v2/assignment/ipv{version}/block/{cidr_segment(cidr)}"


def block_affinity_key(host: str, cidr: str, affinity_type: str = "host") -> str:
    version = 6 if ":" in cidr else 4
    # Virtual affinities use the same layout; the type lives in the value.
    del affinity_type
    return f"/calico/ipam/v2/host/{escape(host)}/ipv{version}/block/{cidr_segment(cidr)}"


def host_config_key(host: str, name: str) -> str:
    return f"/calico/v1/host/{escape(host)}/config/{escape(name)}"


def global_config_key(name: str) -> str:
    return f"/calico/v1/config/{escape(name)}"


READY_FLAG_KEY = "/calico/v1/Ready"


def host_metadata_key(host: str) -> str:
    return f"/calico/v1/host/{escape(host)}/metadata"


def wireguard_key(host: str) -> str:
    return f"/calico/v1/host/{escape(host)}/wireguard"


def resource_key(plural: str, name: str, namespace: str = "") -> str:
    """Passthrough v3 resource key (Node, BGP config/peers, node status, ...)."""
    if namespace:
        return f"/calico/resources/v3/projectcalico.org/{plural}/{escape(namespace)}/{escape(name)}"
    return f"/calico/resources/v3/projectcalico.org/{plural}/{escape(name)}"


# --- Classification and syncer routing -----------------------------------------------------------


class KeyKind(enum.StrEnum):
    WORKLOAD_ENDPOINT = "WorkloadEndpoint"
    HOST_ENDPOINT = "HostEndpoint"
    POLICY = "Policy"
    TIER = "Tier"
    PROFILE_RULES = "ProfileRules"
    PROFILE_LABELS = "ProfileLabels"
    NETWORK_SET = "NetworkSet"
    IP_POOL = "IPPool"
    BLOCK = "Block"
    BLOCK_AFFINITY = "BlockAffinity"
    HOST_CONFIG = "HostConfig"
    GLOBAL_CONFIG = "GlobalConfig"
    READY_FLAG = "ReadyFlag"
    HOST_METADATA = "HostMetadata"
    WIREGUARD = "Wireguard"
    RESOURCE = "Resource"
    UNKNOWN = "Unknown"


def classify(key: str) -> KeyKind:
    """Which model key type a path is (cheap prefix tests; no full parse)."""
    if key.startswith("/calico/v1/host/"):
        rest = key[len("/calico/v1/host/") :]
        parts = rest.split("/")
        if len(parts) >= 2:
            second = parts[1]
            if second == "workload":
                return KeyKind.WORKLOAD_ENDPOINT
            if second == "endpoint":
                return KeyKind.HOST_ENDPOINT
            if second == "config":
                return KeyKind.HOST_CONFIG
            if second == "metadata":
                return KeyKind.HOST_METADATA
            if second == "wireguard":
                return KeyKind.WIREGUARD
        return KeyKind.UNKNOWN
    if key.startswith("/calico/v1/policy/"):
        rest = key[len("/calico/v1/policy/") :]
        if rest.startswith("tier/"):
            return KeyKind.TIER
        if rest.startswith("profile/"):
            return KeyKind.PROFILE_RULES if rest.endswith("/rules") else KeyKind.PROFILE_LABELS
        return KeyKind.POLICY
    if key.startswith("/calico/v1/netset/"):
        return KeyKind.NETWORK_SET
    if key.startswith("/calico/v1/ipam/"):
        return KeyKind.IP_POOL
    if key.startswith("/calico/ipam/v2/assignment/"):
        return KeyKind.BLOCK
    if key.startswith("/calico/ipam/v2/host/"):
        return KeyKind.BLOCK_AFFINITY
    if key.startswith("/calico/v1/config/"):
        return KeyKind.GLOBAL_CONFIG
    if key == READY_FLAG_KEY:
        return KeyKind.READY_FLAG
    if key.startswith("/calico/resources/v3/projectcalico.org/"):
        return KeyKind.RESOURCE
    return KeyKind.UNKNOWN


def resource_plural(key: str) -> str:
    """The plural of a passthrough resource key (``nodes``, ``bgppeers``, ...)."""
    return key[len("/calico/resources/v3/projectcalico.org/") :].split("/", 1)[0]


_F = SyncerType.FELIX
_B = SyncerType.BGP
_T = SyncerType.TUNNEL_IP_ALLOCATION
_S = SyncerType.NODE_STATUS

_ROUTES_BY_KIND: dict[KeyKind, frozenset[SyncerType]] = {
    KeyKind.WORKLOAD_ENDPOINT: frozenset({_F}),
    KeyKind.HOST_ENDPOINT: frozenset({_F}),
    KeyKind.POLICY: frozenset({_F}),
    KeyKind.TIER: frozenset({_F}),
    KeyKind.PROFILE_RULES: frozenset({_F}),
    KeyKind.PROFILE_LABELS: frozenset({_F}),
    KeyKind.NETWORK_SET: frozenset({_F}),
    KeyKind.IP_POOL: frozenset({_F, _B, _T}),
    KeyKind.BLOCK: frozenset({_F}),
    KeyKind.BLOCK_AFFINITY: frozenset({_B}),
    KeyKind.HOST_CONFIG: frozenset({_F}),
    KeyKind.GLOBAL_CONFIG: frozenset({_F}),
    KeyKind.READY_FLAG: frozenset({_F}),
    KeyKind.HOST_METADATA: frozenset({_F}),
    KeyKind.WIREGUARD: frozenset({_F}),
    KeyKind.UNKNOWN: frozenset(),
}

_ROUTES_BY_PLURAL: dict[str, frozenset[SyncerType]] = {
    "nodes": frozenset({_F, _B, _T}),
    "bgpconfigurations": frozenset({_F, _B}),
    "bgppeers": frozenset({_F, _B}),
    "BGPFilters": frozenset({_B}),
    "caliconodestatuses": frozenset({_S}),
    "livemigrations": frozenset({_F}),
    "profiles": frozenset({_F}),
    "kubernetesservice": frozenset({_F}),
    "kubernetesendpointslices": frozenset({_F}),
}

_NO_SYNCERS: frozenset[SyncerType] = frozenset()


def syncer_types_for(key: str) -> frozenset[SyncerType]:
    """The syncer views that receive updates to ``key`` (docs/model.md, "Syncer types")."""
    kind = classify(key)
    if kind is KeyKind.RESOURCE:
        return _ROUTES_BY_PLURAL.get(resource_plural(key), _NO_SYNCERS)
    return _ROUTES_BY_KIND[kind]


def route_all(keys: Iterable[str]) -> dict[SyncerType, list[str]]:
    """Group keys by the syncer types that use them (for tests and diagnostics)."""
    out: dict[SyncerType, list[str]] = {s: [] for s in ALL_SYNCER_TYPES}
    for key in keys:
        for syncer in syncer_types_for(key):
            out[syncer].append(key)
    return out
