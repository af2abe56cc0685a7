"""A reference verdict evaluator: a packet against the model directly, with no indexes and no
rendering. It is the specification the rendered iptables rules are cross-checked against
(``test_crosscheck.py``), written apart from ``felix_client/calc/rules.py`` on purpose: an
oracle that shared the product's rule matching would agree with its mistakes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from felix_client.calc import selector as sel
from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.objects import (
    PORT_PROTOCOLS,
    Action,
    Policy,
    PortRange,
    Rule,
    WorkloadEndpoint,
)
from felix_client.calc.policy import EGRESS, INGRESS, resolve_tiers

__all__ = ["EGRESS", "INGRESS", "Packet", "matching_policies", "rule_matches", "verdict"]


@dataclass(frozen=True, slots=True)
class Packet:
    """An IPv4 packet as policy sees it (ports only for port protocols, ICMP fields for ICMP)."""

    src_ip: str
    dst_ip: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


@lru_cache(maxsize=65536)
def _net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr, strict=False)


def _in_any(ip: str, nets: Iterable[str]) -> bool:
    addr = ipaddress.IPv4Address(ip)
    return any(":" not in n and addr in _net(n) for n in nets)


def _member_items(model: ClusterModel):
    yield from model.weps.values()
    yield from model.heps.values()
    yield from model.netsets.values()


def _ip_matches_selector(model: ClusterModel, selector: sel.Selector, ip: str) -> bool:
    """IP-set semantics: some endpoint or network set matching the selector holds ``ip``."""
    for item in _member_items(model):
        if _in_any(ip, item.ipv4_nets) and selector.matches(model.effective_labels(item)):
            return True
    return False


def _named_port_matches(
    model: ClusterModel,
    selector: sel.Selector,
    rule_protocol: int | None,
    port_name: str,
    ip: str,
    protocol: int,
    port: int | None,
) -> bool:
    if port is None:
        return False
    wanted = {6: "tcp", 17: "udp", 132: "sctp"}.get(protocol)
    if wanted is None:
        return False
    if rule_protocol is None and wanted not in ("tcp", "udp"):
        return False  # "any" named ports cover TCP and UDP only
    for item in (*model.weps.values(), *model.heps.values()):
        if ip + "/32" not in item.ipv4_nets:
            continue
        if not any(
            p.name == port_name and p.protocol == wanted and p.port == port for p in item.ports
        ):
            continue
        if selector.matches(model.effective_labels(item)):
            return True
    return False


def _port_list_matches(
    model: ClusterModel,
    ports: tuple,
    np_selector: sel.Selector,
    rule_protocol: int | None,
    ip: str,
    packet: Packet,
    port: int | None,
) -> bool:
    for p in ports:
        if isinstance(p, PortRange):
            if port is not None and p.lo <= port <= p.hi:
                return True
        elif _named_port_matches(model, np_selector, rule_protocol, p, ip, packet.protocol, port):
            return True
    return False


class _Invalid(Exception):
    pass


def _side_matches(
    model: ClusterModel,
    rule: Rule,
    packet: Packet,
    ip: str,
    port: int | None,
    nets: tuple[str, ...],
    not_nets: tuple[str, ...],
    selector_text: str | None,
    not_selector_text: str | None,
    ports: tuple,
    not_ports: tuple,
) -> bool:
    v4_nets = [n for n in nets if ":" not in n]
    if nets and not v4_nets:
        raise _Invalid()
    numeric = any(isinstance(p, PortRange) for p in (*ports, *not_ports))
    named = any(isinstance(p, str) for p in (*ports, *not_ports))
    if numeric and rule.protocol not in PORT_PROTOCOLS:
        raise _Invalid()
    if named and rule.protocol not in (None, 6, 17, 132):
        raise _Invalid()
    try:
        positive = sel.parse(selector_text) if selector_text else None
        negative = sel.parse(not_selector_text) if not_selector_text else None
    except sel.SelectorParseError:
        raise _Invalid() from None
    if v4_nets and not _in_any(ip, v4_nets):
        return False
    if not_nets and _in_any(ip, not_nets):
        return False
    if positive is not None and not _ip_matches_selector(model, positive, ip):
        return False
    if negative is not None and _ip_matches_selector(model, negative, ip):
        return False
    np_selector = positive or sel.ALL
    if ports and not _port_list_matches(model, ports, np_selector, rule.protocol, ip, packet, port):
        return False
    return not (
        not_ports
        and _port_list_matches(model, not_ports, np_selector, rule.protocol, ip, packet, port)
    )


def rule_matches(model: ClusterModel, rule: Rule, packet: Packet) -> bool:
    """Whether ``rule``'s match criteria hold for ``packet`` (the action is not considered)."""
    try:
        if rule.ip_version == 6 or rule.protocol == 58:
            return False
        if rule.protocol is not None and packet.protocol != rule.protocol:
            return False
        if rule.not_protocol is not None and packet.protocol == rule.not_protocol:
            return False
        if any(
            x is not None
            for x in (rule.icmp_type, rule.icmp_code, rule.not_icmp_type, rule.not_icmp_code)
        ):
            if rule.protocol != 1:
                return False
            if (rule.icmp_code is not None and rule.icmp_type is None) or (
                rule.not_icmp_code is not None and rule.not_icmp_type is None
            ):
                return False
        if not _side_matches(
            model,
            rule,
            packet,
            packet.src_ip,
            packet.src_port,
            rule.src_nets,
            rule.not_src_nets,
            rule.src_selector,
            rule.not_src_selector,
            rule.src_ports,
            rule.not_src_ports,
        ):
            return False
        if not _side_matches(
            model,
            rule,
            packet,
            packet.dst_ip,
            packet.dst_port,
            rule.dst_nets,
            rule.not_dst_nets,
            rule.dst_selector,
            rule.not_dst_selector,
            rule.dst_ports,
            rule.not_dst_ports,
        ):
            return False
    except _Invalid:
        return False
    if rule.icmp_type is not None and not _icmp_matches(rule.icmp_type, rule.icmp_code, packet):
        return False
    return not (
        rule.not_icmp_type is not None
        and _icmp_matches(rule.not_icmp_type, rule.not_icmp_code, packet)
    )


def _icmp_matches(icmp_type: int, icmp_code: int | None, packet: Packet) -> bool:
    if packet.icmp_type != icmp_type:
        return False
    return icmp_code is None or packet.icmp_code == icmp_code


def _evaluate_rules(model: ClusterModel, rules: tuple[Rule, ...], packet: Packet) -> Action | None:
    """First terminal action among ``rules`` (Log is not terminal); ``None`` if none matches."""
    for rule in rules:
        if rule.action is Action.LOG:
            continue
        if rule_matches(model, rule, packet):
            return rule.action
    return None


def matching_policies(model: ClusterModel, endpoint: WorkloadEndpoint) -> list[Policy]:
    """All policies whose selector matches the endpoint's effective labels (by full scan)."""
    labels = model.effective_labels(endpoint)
    out = []
    for policy in model.policies.values():
        try:
            selector = sel.parse(policy.selector)
        except sel.SelectorParseError:
            continue
        if selector.matches(labels):
            out.append(policy)
    return out


def verdict(
    model: ClusterModel,
    endpoint: WorkloadEndpoint,
    direction: str,
    packet: Packet,
    *,
    allow_encap_from_workloads: bool = False,
) -> Action:
    """Reference verdict (``Action.ALLOW`` or ``Action.DENY``) for a new flow.

    ``direction`` is ``"ingress"`` (packet to the endpoint) or ``"egress"`` (from it). Conntrack
    is not modelled: the packet is the first of its flow.
    """
    if not endpoint.active:
        return Action.DENY
    # Felix drops IPIP and VXLAN packets originating in workloads before any policy.
    if (
        direction == EGRESS
        and not allow_encap_from_workloads
        and (packet.protocol == 4 or (packet.protocol == 17 and packet.dst_port == 4789))
    ):
        return Action.DENY
    for tier in resolve_tiers(matching_policies(model, endpoint), model.tiers):
        policies = tier.policies(direction)
        if not policies:
            continue
        outcome: Action | None = None
        for pid in policies:
            policy = model.policies[pid]
            rules = policy.inbound_rules if direction == INGRESS else policy.outbound_rules
            outcome = _evaluate_rules(model, rules, packet)
            if outcome is not None:
                break
        if outcome is Action.ALLOW:
            return Action.ALLOW
        if outcome is Action.DENY:
            return Action.DENY
        if outcome is None and tier.default_action is not Action.PASS:
            return Action.DENY
    for profile_id in endpoint.profile_ids:
        profile = model.profile_rules.get(profile_id)
        if profile is None:
            continue
        rules = profile.inbound_rules if direction == INGRESS else profile.outbound_rules
        outcome = _evaluate_rules(model, rules, packet)
        if outcome is Action.ALLOW:
            return Action.ALLOW
        if outcome is Action.DENY:
            return Action.DENY
    return Action.DENY
