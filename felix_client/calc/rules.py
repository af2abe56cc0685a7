"""The rule scanner: model rules → dataplane-ready rules plus the IP sets they need.

A ``DataplaneRule`` has every selector and named port replaced by an IP set, every net filtered to
IPv4 and every impossible combination resolved: a rule that can never match an IPv4 packet is
dropped here (``scan_rule`` returns ``None``), which keeps the renderer free of special cases.

Semantics decided here (and mirrored by the reference evaluator in ``policy.py``):

* ``ip_version: 6`` rules, and rules whose positive nets are all IPv6, never match IPv4 traffic.
* Numeric ports need a port protocol (tcp, udp, sctp, udplite); named ports need tcp, udp, sctp
  or no protocol ("any": the endpoint's TCP and UDP ports); ICMP type/code need ``icmp``.
  Otherwise the rule never matches (the v3 API rejects such rules anyway).
* Named-port sets are filtered by the rule's positive selector for that side (or ``all()``).
  When a side has a positive selector and only named positive ports, the named-port set implies
  the selector, so no selector set is used for that side (Felix's optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass

from felix_client.calc import selector as sel
from felix_client.calc.ipsetspec import IPSetSpec, named_port_set, selector_set
from felix_client.calc.model.objects import PORT_PROTOCOLS, PROTOCOL_NAMES, Action, PortRange, Rule

NAMED_PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}


@dataclass(frozen=True, slots=True)
class SideMatch:
    """The source or destination half of a rule, with sets resolved to IP set specs."""

    nets: tuple[str, ...] = ()  # OR-ed; empty = any
    not_nets: tuple[str, ...] = ()  # none may match
    ipset: IPSetSpec | None = None  # positive selector set
    not_ipset: IPSetSpec | None = None
    ports: tuple[PortRange, ...] = ()  # OR-ed with named_port_sets; both empty = any
    named_port_sets: tuple[IPSetSpec, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    not_named_port_sets: tuple[IPSetSpec, ...] = ()

    def ipsets(self) -> tuple[IPSetSpec, ...]:
        out = [s for s in (self.ipset, self.not_ipset) if s is not None]
        out.extend(self.named_port_sets)
        out.extend(self.not_named_port_sets)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class DataplaneRule:
    action: Action
    protocol: int | None
    not_protocol: int | None
    src: SideMatch
    dst: SideMatch
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None

    def ipsets(self) -> tuple[IPSetSpec, ...]:
        return self.src.ipsets() + self.dst.ipsets()


class _NeverMatches(Exception):
    pass


def _v4(nets: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in nets if ":" not in n)


def _parse_selector(text: str | None) -> sel.Selector | None:
    if text is None:
        return None
    try:
        return sel.parse(text)
    except sel.SelectorParseError:
        # Validation upstream rejects these; a rule we cannot understand must never match.
        raise _NeverMatches() from None


def _side(
    rule_protocol: int | None,
    nets: tuple[str, ...],
    not_nets: tuple[str, ...],
    selector_text: str | None,
    not_selector_text: str | None,
    ports: tuple,
    not_ports: tuple,
) -> SideMatch:
    v4_nets = _v4(nets)
    if nets and not v4_nets:
        raise _NeverMatches()
    positive = _parse_selector(selector_text)
    negative = _parse_selector(not_selector_text)
    numeric = tuple(p for p in ports if isinstance(p, PortRange))
    named = tuple(p for p in ports if isinstance(p, str))
    not_numeric = tuple(p for p in not_ports if isinstance(p, PortRange))
    not_named = tuple(p for p in not_ports if isinstance(p, str))
    if (numeric or not_numeric) and rule_protocol not in PORT_PROTOCOLS:
        raise _NeverMatches()
    np_sets: tuple[IPSetSpec, ...] = ()
    not_np_sets: tuple[IPSetSpec, ...] = ()
    if named or not_named:
        if rule_protocol is None:
            proto = "any"
        elif rule_protocol in NAMED_PORT_PROTOCOLS:
            proto = NAMED_PORT_PROTOCOLS[rule_protocol]
        else:
            raise _NeverMatches()
        np_selector = positive or sel.ALL
        np_sets = tuple(named_port_set(np_selector, proto, n) for n in dict.fromkeys(named))
        not_np_sets = tuple(named_port_set(np_selector, proto, n) for n in dict.fromkeys(not_named))
    ipset = None
    if positive is not None and not (named and not numeric):
        ipset = selector_set(positive)
    return SideMatch(
        nets=v4_nets,
        not_nets=_v4(not_nets),
        ipset=ipset,
        not_ipset=selector_set(negative) if negative is not None else None,
        ports=numeric,
        named_port_sets=np_sets,
        not_ports=not_numeric,
        not_named_port_sets=not_np_sets,
    )


def scan_rule(rule: Rule) -> DataplaneRule | None:
    """Convert one model rule; ``None`` when it can never match IPv4 traffic."""
    try:
        if rule.ip_version == 6:
            raise _NeverMatches()
        protocol, not_protocol = rule.protocol, rule.not_protocol
        if protocol is not None and not_protocol is not None:
            if protocol == not_protocol:
                raise _NeverMatches()
            not_protocol = None  # implied by the positive protocol
        if protocol == 58:  # ICMPv6 never matches IPv4 packets
            raise _NeverMatches()
        has_icmp = rule.icmp_type is not None or rule.icmp_code is not None
        has_not_icmp = rule.not_icmp_type is not None or rule.not_icmp_code is not None
        if has_icmp or has_not_icmp:
            if protocol != 1:
                raise _NeverMatches()
            if (rule.icmp_code is not None and rule.icmp_type is None) or (
                rule.not_icmp_code is not None and rule.not_icmp_type is None
            ):
                raise _NeverMatches()
        src = _side(
            protocol,
            rule.src_nets,
            rule.not_src_nets,
            rule.src_selector,
            rule.not_src_selector,
            rule.src_ports,
            rule.not_src_ports,
        )
        dst = _side(
            protocol,
            rule.dst_nets,
            rule.not_dst_nets,
            rule.dst_selector,
            rule.not_dst_selector,
            rule.dst_ports,
            rule.not_dst_ports,
        )
    except _NeverMatches:
        return None
    return DataplaneRule(
        action=rule.action,
        protocol=protocol,
        not_protocol=not_protocol,
        src=src,
        dst=dst,
        icmp_type=rule.icmp_type,
        icmp_code=rule.icmp_code,
        not_icmp_type=rule.not_icmp_type,
        not_icmp_code=rule.not_icmp_code,
    )


def scan_rules(rules: tuple[Rule, ...]) -> tuple[DataplaneRule, ...]:
    """Convert a rule list, dropping rules that can never match."""
    out = []
    for rule in rules:
        parsed = scan_rule(rule)
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def rules_ipsets(rules: tuple[DataplaneRule, ...]) -> dict[str, IPSetSpec]:
    """The distinct IP sets a rule list references, by set ID."""
    out: dict[str, IPSetSpec] = {}
    for rule in rules:
        for spec in rule.ipsets():
            out[spec.set_id] = spec
    return out


def protocol_name(number: int) -> str:
    """The name iptables accepts for ``-p`` (falls back to the number)."""
    return PROTOCOL_NAMES.get(number, str(number))
