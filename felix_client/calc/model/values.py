"""Value parsing: one parser per kind, from a decoded value to a model object.

This is the only module that knows the values' field names (docs/model.md: the value schemas
written by ``typha/sync/convert``), so a change in the wire schema is absorbed here. Parsing is
tolerant: snake_case and camelCase spellings are both accepted and unknown fields are ignored;
a value of the wrong type or form raises ValueError/TypeError, which :mod:`.updates` turns into a
deletion of that one key (as Felix's validation filter does).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from felix_client.calc.model.objects import (
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    Action,
    Block,
    EncapMode,
    HostEndpoint,
    IPPool,
    NamedPort,
    NetworkSet,
    NodeInfo,
    Policy,
    PolicyId,
    PortRange,
    ProfileRules,
    Rule,
    RulePort,
    Tier,
    WorkloadEndpoint,
)
from typha.model.keys import unescape


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


_ACTION_ALIASES = {"next-tier": Action.PASS, "nexttier": Action.PASS}


def _encap_mode(raw: Any) -> EncapMode:
    text = _str(raw or "", "encapsulation mode").strip().lower()
    if text in ("always",):
        return EncapMode.ALWAYS
    if text in ("crosssubnet", "cross-subnet", "cross_subnet"):
        return EncapMode.CROSS_SUBNET
    return EncapMode.NEVER


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
