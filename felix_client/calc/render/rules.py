"""Rendering one dataplane rule into iptables rule specs (the text after ``-A <chain>``).

A rule whose criteria are a plain AND renders as one match rule plus its action. When a rule needs
OR-ed alternatives that one iptables rule cannot express — several CIDRs, port lists longer than
one multiport match, numeric ports mixed with named ports — or several negated CIDRs, it renders as
a *match block* using the two scratch mark bits (docs/felix-calc.md, "Chains"):

1. set scratch0, clear scratch1 ("still matching");
2. per OR-group: each alternative that matches while the current bit is set sets the other bit;
   then the current bit is cleared and the bits swap roles;
3. per negated group: each alternative that matches clears the current bit;
4. the main rule requires the current bit, plus everything that could be rendered inline.

This is exactly the rule's semantics (an AND of ORs and NOTs), whatever the number of groups.
"""

from __future__ import annotations

from felix_client.calc.model.objects import Action, PortRange
from felix_client.calc.render.names import (
    MARK_ACCEPT,
    MARK_DROP,
    MARK_PASS,
    MARK_SCRATCH0,
    MARK_SCRATCH1,
    mark_match,
    set_mark,
)
from felix_client.calc.rules import DataplaneRule, SideMatch, protocol_name

MULTIPORT_MAX = 15  # a range counts as two entries
DEFAULT_LOG_PREFIX = "calico-packet"


def _multiport_chunks(ports: tuple[PortRange, ...]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for p in ports:
        cost = 1 if p.lo == p.hi else 2
        if used + cost > MULTIPORT_MAX:
            chunks.append(",".join(current))
            current, used = [], 0
        current.append(p.render())
        used += cost
    if current:
        chunks.append(",".join(current))
    return chunks


class _Matches:
    """Collects inline (AND-ed) fragments, OR-groups and negated groups for one rule."""

    def __init__(self) -> None:
        self.inline: list[str] = []
        self.negated_inline: list[str] = []
        self.or_groups: list[list[str]] = []
        self.not_groups: list[list[str]] = []


def _side(m: _Matches, side: SideMatch, flag: str, direction: str, proto: str | None) -> None:
    """``flag`` is ``-s``/``-d``; ``direction`` is ``src``/``dst``."""
    if len(side.nets) == 1:
        m.inline.append(f"{flag} {side.nets[0]}")
    elif side.nets:
        m.or_groups.append([f"{flag} {n}" for n in side.nets])
    if side.ipset is not None:
        m.inline.append(f"-m set --match-set {side.ipset.name} {direction}")
    port_flag = "--sports" if direction == "src" else "--dports"
    alternatives: list[str] = [
        f"-m multiport {port_flag} {chunk}" for chunk in _multiport_chunks(side.ports)
    ]
    alternatives.extend(
        f"-m set --match-set {s.name} {direction},{direction}" for s in side.named_port_sets
    )
    if len(alternatives) == 1:
        m.inline.append(alternatives[0])
    elif alternatives:
        # Block rules stand alone, so a port match needs its own -p.
        prefix = f"-p {proto} " if proto else ""
        m.or_groups.append(
            [prefix + a if a.startswith("-m multiport") else a for a in alternatives]
        )
    # iptables allows one -s/-d per rule, so a negated net shares a rule with a positive one
    # only through a match block.
    if len(side.not_nets) == 1 and len(side.nets) != 1:
        m.negated_inline.append(f"! {flag} {side.not_nets[0]}")
    elif side.not_nets:
        m.not_groups.append([f"{flag} {n}" for n in side.not_nets])
    if side.not_ipset is not None:
        m.negated_inline.append(f"-m set ! --match-set {side.not_ipset.name} {direction}")
    for chunk in _multiport_chunks(side.not_ports):
        m.negated_inline.append(f"-m multiport ! {port_flag} {chunk}")
    for s in side.not_named_port_sets:
        m.negated_inline.append(f"-m set ! --match-set {s.name} {direction},{direction}")


def _icmp(icmp_type: int, icmp_code: int | None) -> str:
    return str(icmp_type) if icmp_code is None else f"{icmp_type}/{icmp_code}"


def render_rule(rule: DataplaneRule, log_prefix: str = DEFAULT_LOG_PREFIX) -> list[str]:
    """The iptables rule specs for ``rule`` inside a policy or profile chain."""
    proto = protocol_name(rule.protocol) if rule.protocol is not None else None
    m = _Matches()
    if proto:
        m.inline.append(f"-p {proto}")
    _side(m, rule.src, "-s", "src", proto)
    _side(m, rule.dst, "-d", "dst", proto)
    if rule.icmp_type is not None:
        m.inline.append(f"-m icmp --icmp-type {_icmp(rule.icmp_type, rule.icmp_code)}")
    if rule.not_protocol is not None:
        m.negated_inline.insert(0, f"! -p {protocol_name(rule.not_protocol)}")
    if rule.not_icmp_type is not None:
        m.negated_inline.append(
            f"-m icmp ! --icmp-type {_icmp(rule.not_icmp_type, rule.not_icmp_code)}"
        )

    out: list[str] = []
    main: list[str] = []
    if m.or_groups or m.not_groups:
        cur, other = MARK_SCRATCH0, MARK_SCRATCH1
        out.append(set_mark(cur, cur | other))
        for group in m.or_groups:
            for alt in group:
                out.append(f"{mark_match(cur, cur)} {alt} {set_mark(other, other)}")
            out.append(set_mark(0, cur))
            cur, other = other, cur
        for group in m.not_groups:
            for alt in group:
                out.append(f"{mark_match(cur, cur)} {alt} {set_mark(0, cur)}")
        main.append(mark_match(cur, cur))
    main.extend(m.inline)
    main.extend(m.negated_inline)
    match = " ".join(main)
    sep = " " if match else ""
    if rule.action is Action.LOG:
        out.append(f'{match}{sep}-j LOG --log-prefix "{log_prefix}: " --log-level 5')
    elif rule.action is Action.ALLOW:
        out.append(f"{match}{sep}{set_mark(MARK_ACCEPT, MARK_ACCEPT)}")
        out.append(f"{mark_match(MARK_ACCEPT, MARK_ACCEPT)} -j RETURN")
    elif rule.action is Action.PASS:
        out.append(f"{match}{sep}{set_mark(MARK_PASS, MARK_PASS)}")
        out.append(f"{mark_match(MARK_PASS, MARK_PASS)} -j RETURN")
    else:
        out.append(f"{match}{sep}{set_mark(MARK_DROP, MARK_DROP)}")
        out.append(f"{mark_match(MARK_DROP, MARK_DROP)} -j DROP")
    return out


def render_rules(
    rules: tuple[DataplaneRule, ...], log_prefix: str = DEFAULT_LOG_PREFIX
) -> tuple[str, ...]:
    """All rule specs of a policy/profile chain, in order."""
    out: list[str] = []
    for rule in rules:
        out.extend(render_rule(rule, log_prefix))
    return tuple(out)
