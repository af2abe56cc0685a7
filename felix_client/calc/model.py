"""Adapter from Typha's (key, value) pairs to typed model objects.

This is the only module that knows the model's field names (docs/model.md: the key table and
the value schemas written by ``typha/sync/convert``). Everything downstream works on the frozen
dataclasses defined here, so a change in the wire schema is absorbed in this file. Parsing is
tolerant: snake_case and camelCase spellings are both accepted, unknown fields are ignored, and
values that cannot be understood are treated as deletions (as Felix's validation filter does).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

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


def parse_protocol(raw: Any) -> int | None:
    """A protocol name (any case) or number → IANA protocol number; ``None`` when absent."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise ValueError(f"bad protocol {_shown(raw)}")
    if isinstance(raw, int):
        if 0 < raw < 256:
            return raw
        raise ValueError(f"bad protocol {_shown(raw)}")
    text = _str(raw, "protocol").strip().lower()
    if text.isdigit():
        return parse_protocol(int(text))
    if text in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[text]
    raise ValueError(f"bad protocol {_shown(raw)}")


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive numeric port range (a single port has ``lo == hi``)."""

    lo: int
    hi: int

    def render(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"


RulePort = PortRange | str  # a str is a named port


def parse_port(raw: Any) -> RulePort:
    """An int, ``"a:b"`` range, numeric string or named-port string."""
    if isinstance(raw, bool):
        raise ValueError(f"bad port {_shown(raw)}")
    if isinstance(raw, int):
        return _port_range(raw, raw)
    if isinstance(raw, Mapping):  # {"minPort":..,"maxPort":..} or {"portName":..}
        if raw.get("portName") or raw.get("port_name"):
            return _str(raw.get("portName") or raw.get("port_name"), "portName")
        lo = raw.get("minPort", raw.get("min_port"))
        hi = raw.get("maxPort", raw.get("max_port", lo))
        return _port_range(int(lo), int(hi))
    text = _str(raw, "port").strip()
    if text.isdigit():
        return _port_range(int(text), int(text))
    lo_s, sep, hi_s = text.partition(":")
    if sep and lo_s.isdigit() and hi_s.isdigit():
        return _port_range(int(lo_s), int(hi_s))
    if not text:
        raise ValueError("empty port")
    return text


def _port_range(lo: int, hi: int) -> PortRange:
    if not (0 <= lo <= hi <= 65535):
        raise ValueError(f"bad port range {lo}:{hi}")
    return PortRange(lo, hi)


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


_ACTION_ALIASES = {"next-tier": Action.PASS, "nexttier": Action.PASS}


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


def _encap_mode(raw: Any) -> EncapMode:
    text = _str(raw or "", "encapsulation mode").strip().lower()
    if text in ("always",):
        return EncapMode.ALWAYS
    if text in ("crosssubnet", "cross-subnet", "cross_subnet"):
        return EncapMode.CROSS_SUBNET
    return EncapMode.NEVER


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


# --- Keys ----------------------------------------------------------------------------------------


class Kind(StrEnum):
    WORKLOAD_ENDPOINT = "wep"
    HOST_ENDPOINT = "hep"
    NETWORK_SET = "netset"
    POLICY = "policy"
    TIER = "tier"
    PROFILE_RULES = "profile_rules"
    PROFILE_LABELS = "profile_labels"
    IP_POOL = "pool"
    BLOCK = "block"
    NODE = "node"
    HOST_IP = "host_ip"
    HOST_CONFIG = "host_config"
    GLOBAL_CONFIG = "global_config"
    READY = "ready"
    IGNORED = "ignored"


class ParsedKey(NamedTuple):
    """A classified key: ``kind`` plus the identity the rest of the calculation uses.
    (NamedTuples: one is built per update, and they are much cheaper than frozen dataclasses.)"""

    kind: Kind
    id: Any = None
    host: str = ""


_IGNORED = ParsedKey(Kind.IGNORED)


def parse_key(key: str) -> ParsedKey:
    """Classify a model key path (docs/model.md, "Key table"). Unknown paths give
    ``Kind.IGNORED``."""
    parts = key.split("/")
    # parts[0] == "" because keys start with "/".
    if len(parts) < 3 or parts[1] != "calico":
        return _IGNORED
    if parts[2] == "v1":
        return _parse_v1_key(key, parts)
    if parts[2] == "ipam" and len(parts) == 8 and parts[4] == "assignment" and parts[6] == "block":
        if parts[5] == "ipv4":
            return ParsedKey(Kind.BLOCK, _cidr(parts[7]))
        return _IGNORED
    if parts[2] == "resources" and len(parts) >= 7 and parts[5] == "nodes":
        return ParsedKey(Kind.NODE, unescape(parts[6]))
    return _IGNORED


def _cidr(segment: str) -> str:
    addr, _, length = segment.rpartition("-")
    return f"{addr}/{length}"


def _parse_v1_key(key: str, parts: list[str]) -> ParsedKey:
    n = len(parts)
    section = parts[3] if n > 3 else ""
    if section == "host" and n >= 6:
        host = _unescape_fast(parts[4])
        sub = parts[5]
        if sub == "workload" and n == 10 and parts[8] == "endpoint":
            return ParsedKey(Kind.WORKLOAD_ENDPOINT, key, host)
        if sub == "endpoint" and n == 7:
            return ParsedKey(Kind.HOST_ENDPOINT, key, host)
        if sub == "config" and n == 7:
            return ParsedKey(Kind.HOST_CONFIG, unescape(parts[6]), host)
        if sub == "bird_ip" and n == 6:
            return ParsedKey(Kind.HOST_IP, host, host)
        return _IGNORED
    if section == "policy" and n >= 6:
        if parts[4] == "tier":
            if n == 7 and parts[6] == "metadata":
                return ParsedKey(Kind.TIER, unescape(parts[5]))
            if n == 8 and parts[6] == "policy":
                return ParsedKey(Kind.POLICY, _legacy_policy_id(unescape(parts[5]), parts[7]))
            return _IGNORED
        if parts[4] == "profile" and n == 7:
            name = unescape(parts[5])
            if parts[6] == "rules":
                return ParsedKey(Kind.PROFILE_RULES, name)
            if parts[6] == "labels":
                return ParsedKey(Kind.PROFILE_LABELS, name)
            return _IGNORED
        if n == 7:
            return ParsedKey(
                Kind.POLICY, PolicyId(unescape(parts[4]), unescape(parts[5]), unescape(parts[6]))
            )
        return _IGNORED
    if section == "netset" and n == 5:
        return ParsedKey(Kind.NETWORK_SET, unescape(parts[4]))
    if section == "ipam" and n == 7 and parts[4] == "v4" and parts[5] == "pool":
        return ParsedKey(Kind.IP_POOL, _cidr(parts[6]))
    if section == "config" and n == 5:
        return ParsedKey(Kind.GLOBAL_CONFIG, unescape(parts[4]))
    if section == "Ready" and n == 4:
        return ParsedKey(Kind.READY)
    return _IGNORED


def _legacy_policy_id(tier: str, escaped_name: str) -> PolicyId:
    name = unescape(escaped_name)
    namespace, sep, short = name.partition("/")
    if sep:
        return PolicyId("", namespace, short, legacy_tier=tier)
    return PolicyId("", "", name, legacy_tier=tier)


# --- Value parsing -------------------------------------------------------------------------------


def _get(value: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in value:
            got = value[name]
            if got is not None:
                return got
    return default


# Every helper below raises ValueError/TypeError on a value of the wrong type or form, which
# parse_update turns into a deletion of that one key. Being strict here is what keeps a bad value
# from failing later, in rendering or in the kernel, where it would hurt every other key.


def _str(raw: Any, what: str) -> str:
    if type(raw) is not str:
        raise TypeError(f"{what}: expected a string, got {type(raw).__name__}")
    return raw


def _opt_str(raw: Any, what: str) -> str | None:
    return None if raw is None else _str(raw, what)


def _str_tuple(raw: Any, what: str) -> tuple[str, ...]:
    for item in _list(raw, what):
        if type(item) is not str:
            raise TypeError(f"{what}: expected strings, got {type(item).__name__}")
    return tuple(raw or ())


def _labels(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    if type(raw) is not dict and not isinstance(raw, Mapping):  # the cheap test first
        raise TypeError(f"labels: expected a map, got {type(raw).__name__}")
    for k, v in raw.items():
        if type(k) is not str or type(v) is not str:
            raise TypeError("labels: expected string keys and values")
    return dict(raw)


def _ipv4(text: str) -> str:
    """``text`` if it is a dotted-quad IPv4 address, else ValueError."""
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None
    return text


def _ipv4_net(raw: Any, default_len: int = 32) -> str:
    """An IPv4 address or CIDR → ``a.b.c.d/n`` (the host bits are kept, as Felix does)."""
    addr, sep, plen = _str(raw, "address").partition("/")
    _ipv4(addr)
    if not sep:
        return f"{addr}/{default_len}"
    if not plen.isdigit() or int(plen) > 32 or len(plen) > 2:
        raise ValueError(f"bad prefix length in {_shown(raw)}")
    return f"{addr}/{int(plen)}"


def _ipv6_net(raw: Any) -> str:
    addr, sep, plen = _str(raw, "address").partition("/")
    try:
        socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        raise ValueError(f"not an IPv6 address: {_shown(raw)}") from None
    if sep and (not plen.isdigit() or int(plen) > 128 or len(plen) > 3):
        raise ValueError(f"bad prefix length in {_shown(raw)}")
    return raw  # type: ignore[no-any-return]


def _list(raw: Any, what: str) -> Iterable[Any]:
    if not raw:
        return ()
    if type(raw) is not list and not isinstance(raw, tuple):
        raise TypeError(f"{what}: expected a list, got {type(raw).__name__}")
    return raw  # type: ignore[no-any-return]


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def _v4_host_nets(raw: Any) -> tuple[str, ...]:
    # Fast path: one "a.b.c.d/32", what nearly every workload has.
    if type(raw) is list and len(raw) == 1:
        text = raw[0]
        if type(text) is str and text.endswith("/32"):
            try:
                _inet_pton(_AF_INET, text[:-3])
            except OSError:
                raise ValueError(f"not an IPv4 address: {text!r}") from None
            return (text,)
    out = []
    for text in _list(raw, "nets"):
        if type(text) is str and ":" in text:
            continue  # IPv6: not rendered by this client
        out.append(_ipv4_net(text))
    return tuple(out)


def _v6_nets(raw: Any) -> tuple[str, ...]:
    return tuple(_ipv6_net(i) for i in _list(raw, "nets") if not (type(i) is str and ":" not in i))


def _v4_nets(raw: Any) -> tuple[str, ...]:
    out: list[str] = []
    for item in _list(raw, "nets"):
        if type(item) is str and ":" in item:
            continue
        text = _ipv4_net(item)
        if text.endswith("/0"):
            # hash:net sets cannot hold /0; two /1s cover the same space.
            out.extend(("0.0.0.0/1", "128.0.0.0/1"))
        else:
            out.append(text)
    return tuple(out)


def _named_ports(raw: Any) -> tuple[NamedPort, ...]:
    out = []
    for item in _list(raw, "ports"):
        name = item.get("name")
        port = item.get("port")
        if not name or port is None:
            continue
        if type(port) is not int or not 0 < port <= 65535:
            raise ValueError(f"bad port {port!r}")
        number = parse_protocol(item.get("protocol") or "tcp")
        proto = PROTOCOL_NAMES.get(number) if number is not None else None
        if proto is None:
            raise ValueError(f"bad protocol in named port {name!r}")
        out.append(NamedPort(_str(name, "port name"), proto, port))
    return tuple(out)


def parse_workload_endpoint(key: str, host: str, value: Mapping[str, Any]) -> WorkloadEndpoint:
    # This runs once per endpoint in a snapshot (tens of thousands), so it avoids the generic
    # helpers on the common path.
    get = value.get
    labels = get("labels")
    ports = get("ports")
    nets = get("ipv4_nets")
    if nets is None:
        nets = get("ipv4Nets") or ()
    profiles = get("profile_ids")
    if profiles is None:
        profiles = get("profileIds") or ()
    v6 = get("ipv6_nets")
    if v6 is None:
        v6 = get("ipv6Nets")
    state = get("state") or "active"
    name = get("name") or ""
    mac = get("mac")
    if type(state) is not str or type(name) is not str or not (mac is None or type(mac) is str):
        raise TypeError("workload endpoint: state, name and mac must be strings")
    return WorkloadEndpoint(
        key,
        host,
        state,
        name,
        mac,
        _str_tuple(profiles, "profile_ids"),
        _v4_host_nets(nets),
        _v6_nets(v6) if v6 else (),
        _labels(labels),
        _named_ports(ports) if ports else (),
    )


def _unescape_fast(segment: str) -> str:
    return unescape(segment) if "%" in segment else segment


def parse_host_endpoint(key: str, host: str, value: Mapping[str, Any]) -> HostEndpoint:
    addrs = _get(value, "expected_ipv4_addrs", "expectedIpv4Addrs", "expectedIPs", default=())
    return HostEndpoint(
        key=key,
        host=host,
        endpoint_id=unescape(key.split("/")[6]),
        iface=_str(_get(value, "name", default=""), "name"),
        ipv4_nets=_v4_host_nets(addrs),
        labels=_labels(_get(value, "labels")),
        profile_ids=_str_tuple(_get(value, "profile_ids", "profileIds"), "profile_ids"),
        ports=_named_ports(_get(value, "ports", default=())),
    )


def parse_network_set(name: str, value: Mapping[str, Any]) -> NetworkSet:
    return NetworkSet(
        key=name,
        name=name,
        ipv4_nets=_v4_nets(_get(value, "nets", default=())),
        labels=_labels(_get(value, "labels")),
        profile_ids=_str_tuple(_get(value, "profile_ids", "profileIds"), "profile_ids"),
    )


def _selector_text(raw: Any) -> str | None:
    if raw is None:
        return None
    text = _str(raw, "selector")
    return text if text.strip() else None


def _opt_int(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool | float):
        raise TypeError(f"expected an integer, got {_shown(raw)}")
    return int(raw)


def _ports(raw: Any) -> tuple[RulePort, ...]:
    return tuple(parse_port(p) for p in _list(raw, "ports"))


def parse_rule(raw: Mapping[str, Any]) -> Rule:
    """One rule; raises ``ValueError`` when it cannot be understood."""
    action_text = _str(_get(raw, "action", default="allow"), "action").strip().lower()
    action = _ACTION_ALIASES.get(action_text) or Action(action_text)
    icmp = _get(raw, "icmp", default=None) or {}
    not_icmp = _get(raw, "not_icmp", "notICMP", default=None) or {}
    # libcalico-go's names come first: negations are "!src_nets" etc. (the not_* forms and the
    # camelCase ones are accepted too).
    if not isinstance(icmp, Mapping) or not isinstance(not_icmp, Mapping):
        raise TypeError("icmp: expected a map")
    return Rule(
        action=action,
        ip_version=_opt_int(_get(raw, "ip_version", "ipVersion")),
        protocol=parse_protocol(_get(raw, "protocol")),
        not_protocol=parse_protocol(_get(raw, "!protocol", "not_protocol", "notProtocol")),
        src_nets=_rule_nets(raw, "src_nets", "src_net", "srcNets", "srcNet"),
        not_src_nets=_rule_nets(
            raw, "!src_nets", "!src_net", "not_src_nets", "not_src_net", "notSrcNets", "notSrcNet"
        ),
        src_selector=_selector_text(_get(raw, "src_selector", "srcSelector")),
        not_src_selector=_selector_text(
            _get(raw, "!src_selector", "not_src_selector", "notSrcSelector")
        ),
        src_ports=_ports(_get(raw, "src_ports", "srcPorts"))
        + _str_tuple(_get(raw, "src_named_ports", "srcNamedPorts"), "named ports"),
        not_src_ports=_ports(_get(raw, "!src_ports", "not_src_ports", "notSrcPorts"))
        + _str_tuple(_get(raw, "not_src_named_ports", "notSrcNamedPorts"), "named ports"),
        dst_nets=_rule_nets(raw, "dst_nets", "dst_net", "dstNets", "dstNet"),
        not_dst_nets=_rule_nets(
            raw, "!dst_nets", "!dst_net", "not_dst_nets", "not_dst_net", "notDstNets", "notDstNet"
        ),
        dst_selector=_selector_text(_get(raw, "dst_selector", "dstSelector")),
        not_dst_selector=_selector_text(
            _get(raw, "!dst_selector", "not_dst_selector", "notDstSelector")
        ),
        dst_ports=_ports(_get(raw, "dst_ports", "dstPorts"))
        + _str_tuple(_get(raw, "dst_named_ports", "dstNamedPorts"), "named ports"),
        not_dst_ports=_ports(_get(raw, "!dst_ports", "not_dst_ports", "notDstPorts"))
        + _str_tuple(_get(raw, "not_dst_named_ports", "notDstNamedPorts"), "named ports"),
        icmp_type=_opt_int(_get(raw, "icmp_type", "icmpType", default=icmp.get("type"))),
        icmp_code=_opt_int(_get(raw, "icmp_code", "icmpCode", default=icmp.get("code"))),
        not_icmp_type=_opt_int(
            _get(
                raw,
                "!icmp_type",
                "not_icmp_type",
                "notICMPType",
                "notIcmpType",
                default=not_icmp.get("type"),
            )
        ),
        not_icmp_code=_opt_int(
            _get(
                raw,
                "!icmp_code",
                "not_icmp_code",
                "notICMPCode",
                "notIcmpCode",
                default=not_icmp.get("code"),
            )
        ),
    )


def _rule_nets(raw: Mapping[str, Any], *names: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        got = raw.get(name)
        if not got:
            continue
        for net in [got] if isinstance(got, str) else _list(got, name):
            if type(net) is str and ":" in net:
                text = _ipv6_net(net)
                out.append(text if "/" in text else text + "/128")
            else:
                out.append(_ipv4_net(net))
    return tuple(dict.fromkeys(out))


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    return tuple(parse_rule(r) for r in _list(raw, "rules"))


def _order(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool | str):
        raise TypeError(f"order: expected a number, got {_shown(raw)}")
    order = float(raw)
    return None if math.isnan(order) else order


def parse_policy(pid: PolicyId, value: Mapping[str, Any]) -> Policy:
    types = {t.lower() for t in _str_tuple(_get(value, "types"), "types")}
    inbound = parse_rules(_get(value, "inbound_rules", "inboundRules"))
    outbound = parse_rules(_get(value, "outbound_rules", "outboundRules"))
    # Felix treats a policy that arrives with no types as applying in both directions
    # (the v3 API normally fills them in before they get here; docs/model.md, "Policy").
    ingress = "ingress" in types or not types
    egress = "egress" in types or not types
    return Policy(
        id=pid,
        tier=_str(_get(value, "tier", default=pid.legacy_tier or "default"), "tier"),
        order=_order(_get(value, "order")),
        selector=_str(_get(value, "selector", default="") or "", "selector"),
        inbound_rules=inbound,
        outbound_rules=outbound,
        ingress=ingress,
        egress=egress,
        untracked=bool(_get(value, "untracked", default=False)),
        pre_dnat=bool(_get(value, "pre_dnat", "preDNAT", default=False)),
        apply_on_forward=bool(_get(value, "apply_on_forward", "applyOnForward", default=False)),
    )


def api_default_types(has_ingress_rules: bool, has_egress_rules: bool) -> tuple[str, ...]:
    """The v3 API's defaulting of an empty ``types`` (docs/model.md, "Policy"), for converters
    and tests."""
    if not has_egress_rules:
        return ("ingress",)
    if not has_ingress_rules:
        return ("egress",)
    return ("ingress", "egress")


def parse_tier(name: str, value: Mapping[str, Any]) -> Tier:
    action = _str(_get(value, "default_action", "defaultAction", default="deny"), "action").lower()
    return Tier(
        name=name,
        order=_order(_get(value, "order")),
        default_action=Action.PASS if action == "pass" else Action.DENY,
    )


def parse_profile_rules(name: str, value: Mapping[str, Any]) -> ProfileRules:
    return ProfileRules(
        name=name,
        inbound_rules=parse_rules(_get(value, "inbound_rules", "inboundRules")),
        outbound_rules=parse_rules(_get(value, "outbound_rules", "outboundRules")),
    )


def parse_ip_pool(cidr: str, value: Mapping[str, Any]) -> IPPool:
    ipip_mode = _get(value, "ipip_mode", "ipipMode")
    if ipip_mode is None and _get(value, "ipip"):
        ipip_mode = "Always"
    return IPPool(
        cidr=_ipv4_or_v6_cidr(_get(value, "cidr", default=cidr)),
        ipip_mode=_encap_mode(ipip_mode),
        vxlan_mode=_encap_mode(_get(value, "vxlan_mode", "vxlanMode")),
        masquerade=bool(_get(value, "masquerade", "natOutgoing", "nat_outgoing", default=False)),
        disabled=bool(_get(value, "disabled", default=False)),
    )


def parse_block(cidr: str, value: Mapping[str, Any]) -> Block:
    affinity = _get(value, "affinity")
    host = None
    if isinstance(affinity, str) and affinity.startswith("host:"):
        host = affinity[len("host:") :]
    # The key names the block; a value that disagrees is broken (and could be of the other IP
    # version, which the route index for this key's version cannot hold).
    if _ipv4_or_v6_cidr(_get(value, "cidr", default=cidr)) != cidr:
        raise ValueError(f"block value's cidr does not match its key ({cidr})")
    return Block(cidr=cidr, affinity_host=host)


def _ipv4_or_v6_cidr(raw: Any) -> str:
    text = _str(raw, "cidr")
    if ":" in text:
        return _ipv6_net(text)
    if "/" not in text:
        raise ValueError(f"not a CIDR: {text!r}")
    return _ipv4_net(text)


def parse_node(name: str, value: Mapping[str, Any]) -> NodeInfo:
    spec = value.get("spec") or {}
    bgp = spec.get("bgp") or {}
    raw_cidr = bgp.get("ipv4Address") or bgp.get("ipv4_address")
    address = subnet = None
    if raw_cidr:
        cidr = _ipv4_net(raw_cidr)
        address = cidr.partition("/")[0]
        subnet = cidr if "/" in raw_cidr else None
    meta = value.get("metadata") or {}
    ipip = bgp.get("ipv4IPIPTunnelAddr") or spec.get("ipv4IPIPTunnelAddr")
    vxlan = spec.get("ipv4VXLANTunnelAddr")
    return NodeInfo(
        name=_str(meta.get("name") or name, "name"),
        ipv4_address=address,
        ipv4_cidr=subnet,
        ipip_tunnel_addr=_ipv4(_str(ipip, "ipv4IPIPTunnelAddr")) if ipip else None,
        vxlan_tunnel_addr=_ipv4(_str(vxlan, "ipv4VXLANTunnelAddr")) if vxlan else None,
        vxlan_tunnel_mac=_opt_str(spec.get("vxlanTunnelMACAddr"), "vxlanTunnelMACAddr"),
    )


# --- The parsed update ---------------------------------------------------------------------------


class ParsedUpdate(NamedTuple):
    """One update after parsing: ``value is None`` means delete (or unparseable)."""

    kind: Kind
    id: Any
    host: str
    value: Any


def parse_update(key: str, value: Any) -> ParsedUpdate:
    """Parse ``(key, value)``. An unparseable value is reported as a deletion.

    The parsers descend only as deep as the value schema and never stringify a container, so
    nesting beyond the schema cannot matter; and *any* exception (not only the expected
    ValueError/TypeError) costs this one key. Use :func:`parse_error` for the reason."""
    pk = parse_key(key)
    if value is None or pk.kind in (Kind.IGNORED, Kind.READY):
        return ParsedUpdate(pk.kind, pk.id, pk.host, value if pk.kind is Kind.READY else None)
    try:
        parsed = _PARSERS[pk.kind](pk, value)
    except Exception:
        parsed = None
    return ParsedUpdate(pk.kind, pk.id, pk.host, parsed)


def parse_error(key: str, value: Any) -> str | None:
    """Why ``value`` does not parse (for a log line), or None if it does. Slow path only."""
    pk = parse_key(key)
    if value is None or pk.kind in (Kind.IGNORED, Kind.READY):
        return None
    try:
        _PARSERS[pk.kind](pk, value)
    except Exception as exc:
        try:
            text = f"{type(exc).__name__}: {exc}"
        except Exception:
            text = type(exc).__name__
        return text[:300]
    return None


def _shown(raw: Any) -> str:
    """``raw`` for an error message: a scalar's repr (cut short), a container's type only
    (``repr`` of a container nested 1,000 deep raises RecursionError)."""
    if isinstance(raw, (str, bytes, int, float, bool)) or raw is None:
        text = repr(raw)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"a {type(raw).__name__}"


def _config_value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise TypeError(f"config value: expected a scalar, got {type(value).__name__}")
    return str(value)


_PARSERS: dict[Kind, Any] = {
    Kind.WORKLOAD_ENDPOINT: lambda pk, v: parse_workload_endpoint(pk.id, pk.host, v),
    Kind.HOST_ENDPOINT: lambda pk, v: parse_host_endpoint(pk.id, pk.host, v),
    Kind.NETWORK_SET: lambda pk, v: parse_network_set(pk.id, v),
    Kind.POLICY: lambda pk, v: parse_policy(pk.id, v),
    Kind.TIER: lambda pk, v: parse_tier(pk.id, v),
    Kind.PROFILE_RULES: lambda pk, v: parse_profile_rules(pk.id, v),
    Kind.PROFILE_LABELS: lambda pk, v: _labels(v),
    Kind.IP_POOL: lambda pk, v: parse_ip_pool(pk.id, v),
    Kind.BLOCK: lambda pk, v: parse_block(pk.id, v),
    Kind.NODE: lambda pk, v: parse_node(pk.id, v),
    Kind.HOST_IP: lambda pk, v: _config_value(v).partition("/")[0],
    Kind.HOST_CONFIG: lambda pk, v: _config_value(v),
    Kind.GLOBAL_CONFIG: lambda pk, v: _config_value(v),
}


# --- The whole cluster ---------------------------------------------------------------------------


@dataclass
class ClusterModel:
    """Every parsed object the node knows about, keyed by identity. Pure storage: indexes over it
    live in the calculation modules."""

    weps: dict[str, WorkloadEndpoint] = field(default_factory=dict)
    heps: dict[str, HostEndpoint] = field(default_factory=dict)
    netsets: dict[str, NetworkSet] = field(default_factory=dict)
    policies: dict[PolicyId, Policy] = field(default_factory=dict)
    tiers: dict[str, Tier] = field(default_factory=dict)
    profile_rules: dict[str, ProfileRules] = field(default_factory=dict)
    profile_labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    pools: dict[str, IPPool] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    host_ips: dict[str, str] = field(default_factory=dict)
    host_config: dict[str, dict[str, str]] = field(default_factory=dict)
    global_config: dict[str, str] = field(default_factory=dict)
    ready: bool = False

    def store(self, update: ParsedUpdate) -> Any:
        """Apply ``update``; returns the previous value (``None`` if there was none)."""
        kind = update.kind
        if kind is Kind.IGNORED:
            return None
        if kind is Kind.READY:
            old = self.ready
            self.ready = bool(update.value)
            return old
        if kind is Kind.HOST_CONFIG:
            table = self.host_config.setdefault(update.host, {})
        else:
            table = getattr(self, _TABLES[kind])
        if update.value is None:
            return table.pop(update.id, None)
        old = table.get(update.id)
        table[update.id] = update.value
        return old

    def effective_labels(self, endpoint: Endpoint) -> Mapping[str, str]:
        """Own labels over profile labels; earlier profiles win over later ones."""
        parents = getattr(endpoint, "profile_ids", ())
        if not parents:
            return endpoint.labels
        merged: dict[str, str] = {}
        for profile in reversed(parents):
            merged.update(self.profile_labels.get(profile, {}))
        merged.update(endpoint.labels)
        return merged

    def config(self, host: str, name: str, default: str | None = None) -> str | None:
        """Host config overrides global config (as Felix's config batcher does)."""
        host_cfg = self.host_config.get(host, {})
        if name in host_cfg:
            return host_cfg[name]
        return self.global_config.get(name, default)


_TABLES: dict[Kind, str] = {
    Kind.WORKLOAD_ENDPOINT: "weps",
    Kind.HOST_ENDPOINT: "heps",
    Kind.NETWORK_SET: "netsets",
    Kind.POLICY: "policies",
    Kind.TIER: "tiers",
    Kind.PROFILE_RULES: "profile_rules",
    Kind.PROFILE_LABELS: "profile_labels",
    Kind.IP_POOL: "pools",
    Kind.BLOCK: "blocks",
    Kind.NODE: "nodes",
    Kind.HOST_IP: "host_ips",
    Kind.GLOBAL_CONFIG: "global_config",
}
