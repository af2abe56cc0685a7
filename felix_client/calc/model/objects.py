"""The typed model objects the node's calculation works on.

Frozen (or slotted) dataclasses for endpoints, policies, tiers, profiles, IP pools, blocks and
nodes, plus the protocol tables they refer to. Built only by :mod:`.values`; everything downstream
reads these and never the wire's field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from typha.model.keys import unescape

# --- Protocols and ports -------------------------------------------------------------------------

PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NAMES: dict[int, str] = {v: k for k, v in PROTOCOL_NUMBERS.items()}
# Protocols for which iptables' multiport match (and hence numeric port matching) works.
PORT_PROTOCOLS = frozenset({6, 17, 132, 136})


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive numeric port range (a single port has ``lo == hi``)."""

    lo: int
    hi: int

    def render(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"


RulePort = PortRange | str  # a str is a named port


# --- Endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A named port on an endpoint: ``protocol`` is ``tcp``, ``udp`` or ``sctp``."""

    name: str
    protocol: str
    port: int


@dataclass(slots=True, eq=False)
class WorkloadEndpoint:
    """A workload endpoint. Treat as immutable (not frozen only because frozen dataclasses are
    several times slower to construct, and snapshots build tens of thousands)."""

    key: str
    host: str
    state: str
    iface: str
    mac: str | None
    profile_ids: tuple[str, ...]
    ipv4_nets: tuple[str, ...]  # always "a.b.c.d/32"
    ipv6_nets: tuple[str, ...]
    labels: Mapping[str, str]
    ports: tuple[NamedPort, ...]

    @property
    def active(self) -> bool:
        return self.state == "active"

    # The identity fields are derived from the key on demand: nothing on the hot path needs them.
    @property
    def orchestrator(self) -> str:
        return unescape(self.key.split("/")[6])

    @property
    def workload(self) -> str:
        return unescape(self.key.split("/")[7])

    @property
    def endpoint(self) -> str:
        return unescape(self.key.split("/")[9])

    @property
    def ipv4_addrs(self) -> tuple[str, ...]:
        return tuple(n.partition("/")[0] for n in self.ipv4_nets)


@dataclass(frozen=True, slots=True, eq=False)
class HostEndpoint:
    key: str
    host: str
    endpoint_id: str
    iface: str
    ipv4_nets: tuple[str, ...]  # the expected IPv4 addresses as /32s
    labels: Mapping[str, str]
    profile_ids: tuple[str, ...]
    ports: tuple[NamedPort, ...]


@dataclass(frozen=True, slots=True, eq=False)
class NetworkSet:
    key: str
    name: str
    ipv4_nets: tuple[str, ...]  # CIDRs; a /0 is split into two /1s (ipsets cannot hold /0)
    labels: Mapping[str, str]
    # A namespaced set inherits its namespace profile's labels (``kns.<ns>``), like a pod.
    profile_ids: tuple[str, ...] = ()
    ports: tuple[NamedPort, ...] = ()  # network sets have no ports


Endpoint = WorkloadEndpoint | HostEndpoint | NetworkSet


# --- Policy --------------------------------------------------------------------------------------


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    PASS = "pass"
    LOG = "log"


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    src_nets: tuple[str, ...] = ()
    not_src_nets: tuple[str, ...] = ()
    src_selector: str | None = None
    not_src_selector: str | None = None
    src_ports: tuple[RulePort, ...] = ()
    not_src_ports: tuple[RulePort, ...] = ()
    dst_nets: tuple[str, ...] = ()
    not_dst_nets: tuple[str, ...] = ()
    dst_selector: str | None = None
    not_dst_selector: str | None = None
    dst_ports: tuple[RulePort, ...] = ()
    not_dst_ports: tuple[RulePort, ...] = ()
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None


# Short kinds used in chain-name suffixes (docs/felix-calc.md, "Naming rules").
KIND_SHORT: dict[str, str] = {
    "NetworkPolicy": "np",
    "GlobalNetworkPolicy": "gnp",
    "KubernetesNetworkPolicy": "knp",
    "KubernetesClusterNetworkPolicy": "kcnp",
    "ClusterNetworkPolicy": "kcnp",
    "StagedNetworkPolicy": "snp",
    "StagedGlobalNetworkPolicy": "sgnp",
    "StagedKubernetesNetworkPolicy": "sknp",
}
STAGED_KINDS = frozenset(
    {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"}
)


@dataclass(frozen=True, slots=True)
class PolicyId:
    """Identity of a policy: HEAD keys carry kind/namespace/name; legacy keys carry tier/name."""

    kind: str
    namespace: str
    name: str
    legacy_tier: str = ""

    @property
    def sort_name(self) -> str:
        """Tie-break string within a tier: ``<name>/<namespace>/<kind>`` (HEAD)."""
        if self.legacy_tier:
            return self.name
        return f"{self.name}/{self.namespace}/{self.kind}"

    @property
    def chain_suffix(self) -> str:
        """The suffix of this policy's ``cali-pi-``/``cali-po-`` chain names."""
        if self.legacy_tier:
            return f"{self.legacy_tier}/{self.name}"
        short = KIND_SHORT.get(self.kind, self.kind.lower())
        if self.namespace:
            return f"{short}/{self.namespace}/{self.name}"
        return f"{short}/{self.name}"

    @property
    def staged(self) -> bool:
        return self.kind in STAGED_KINDS or self.name.startswith("staged:")

    def __str__(self) -> str:
        return self.chain_suffix


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    id: PolicyId
    tier: str
    order: float | None
    selector: str
    inbound_rules: tuple[Rule, ...]
    outbound_rules: tuple[Rule, ...]
    ingress: bool  # policy governs ingress (Types filtering, empty types ⇒ both)
    egress: bool
    untracked: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    order: float | None
    default_action: Action  # DENY or PASS


@dataclass(frozen=True, slots=True)
class ProfileRules:
    name: str
    inbound_rules: tuple[Rule, ...]
    outbound_rules: tuple[Rule, ...]


# --- IPAM, nodes ---------------------------------------------------------------------------------


class EncapMode(StrEnum):
    NEVER = "Never"
    ALWAYS = "Always"
    CROSS_SUBNET = "CrossSubnet"


@dataclass(frozen=True, slots=True)
class IPPool:
    cidr: str
    ipip_mode: EncapMode
    vxlan_mode: EncapMode
    masquerade: bool
    disabled: bool


@dataclass(frozen=True, slots=True)
class Block:
    cidr: str
    affinity_host: str | None  # node name for "host:<node>" affinities


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the routing calculation needs from a v3 Node resource."""

    name: str
    ipv4_address: str | None  # "10.0.0.11"
    ipv4_cidr: str | None  # "10.0.0.11/24" (the node's subnet, for CrossSubnet)
    ipip_tunnel_addr: str | None = None
    vxlan_tunnel_addr: str | None = None
    vxlan_tunnel_mac: str | None = None
