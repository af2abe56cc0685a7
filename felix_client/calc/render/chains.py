"""Felix's chain structure for workloads (docs/felix-calc.md, "Chains"): endpoint, dispatch,
static filter chains, the nat chains, and the hooks from the kernel chains.

Chains are returned as tuples of rule specs (the text after ``-A <chain>``). Host endpoints are not
policed by this client, so the host-endpoint chains (``cali-from-host-endpoint``…) and the jumps to
them are omitted; see docs/felix-calc.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from felix_client.calc.ipsetspec import (
    ALL_HOSTS_ID,
    ALL_VXLAN_ID,
    MASQ_POOLS_ID,
    NETWORK_POOLS_ID,
    ipset_name,
)
from felix_client.calc.model.objects import Action, PolicyId, WorkloadEndpoint
from felix_client.calc.policy import EGRESS, INGRESS, TierInfo
from felix_client.calc.render.names import (
    FILTER_FORWARD,
    FILTER_INPUT,
    FILTER_OUTPUT,
    FROM_WL_DISPATCH,
    MARK_ACCEPT,
    MARK_ALL_CALICO,
    MARK_PASS,
    NAT_OUTGOING,
    NAT_POSTROUTING,
    TO_WL_DISPATCH,
    WL_TO_HOST,
    endpoint_chain,
    mark_match,
    policy_chain,
    profile_chain,
    set_mark,
)

WORKLOAD_IFACE_WILDCARD = "cali+"
IPIP_DEVICE = "tunl0"
VXLAN_DEVICE = "vxlan.calico"
VXLAN_PORT = 4789

_ACCEPT = mark_match(MARK_ACCEPT, MARK_ACCEPT)
_PASS_CLEAR = mark_match(0, MARK_PASS)


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """Configuration that shapes the static and endpoint chains."""

    endpoint_to_host_action: str = "DROP"  # DefaultEndpointToHostAction: DROP, ACCEPT or RETURN
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False
    ipip_enabled: bool = False  # some pool uses IPIP
    vxlan_enabled: bool = False  # some pool uses VXLAN
    nat_outgoing: bool = False  # some pool has natOutgoing
    drop_invalid: bool = True  # not DisableConntrackInvalidCheck


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def endpoint_chain_rules(
    endpoint: WorkloadEndpoint,
    tiers: Iterable[TierInfo],
    direction: str,
    options: ChainOptions,
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The ``cali-tw-`` (ingress) or ``cali-fw-`` (egress) chain of a workload, plus the policy and
    profile chains it references."""
    if not endpoint.active:
        return ((f"{_comment('Endpoint admin disabled')} -j DROP",), frozenset())
    inbound = direction == INGRESS
    rules = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    if options.drop_invalid:
        rules.append("-m conntrack --ctstate INVALID -j DROP")
    rules.append(set_mark(0, MARK_ACCEPT | MARK_PASS))
    if direction == EGRESS:
        if not options.allow_vxlan_from_workloads:
            rules.append(
                f"-p udp -m multiport --dports {VXLAN_PORT} "
                f"{_comment('Drop VXLAN encapped packets originating in workloads')} -j DROP"
            )
        if not options.allow_ipip_from_workloads:
            rules.append(
                f"-p 4 {_comment('Drop IPinIP encapped packets originating in workloads')} -j DROP"
            )
    refs: set[str] = set()
    for tier in tiers:
        pids: tuple[PolicyId, ...] = tier.policies(direction)
        if not pids:
            continue
        rules.append(f"{_comment(f'Start of tier {tier.name}')} {set_mark(0, MARK_PASS)}")
        for pid in pids:
            chain = policy_chain(pid, inbound)
            refs.add(chain)
            rules.append(f"{_PASS_CLEAR} -j {chain}")
            rules.append(f"{_ACCEPT} {_comment('Return if policy accepted')} -j RETURN")
        if tier.default_action is not Action.PASS:
            rules.append(
                f"{_PASS_CLEAR} "
                f"{_comment(f'End of tier {tier.name}. Drop if no policies passed packet')} -j DROP"
            )
    for profile in endpoint.profile_ids:
        chain = profile_chain(profile, inbound)
        refs.add(chain)
        rules.append(f"-j {chain}")
        rules.append(f"{_ACCEPT} {_comment('Return if profile accepted')} -j RETURN")
    rules.append(f"{_comment('Drop if no profiles matched')} -j DROP")
    return tuple(rules), frozenset(refs)


def dispatch_chains(ifaces: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Flat dispatch chains sorted by interface name (no prefix tree; see docs)."""
    names = sorted(set(ifaces))
    from_rules = [f"-i {i} -g {endpoint_chain(i, to_workload=False)}" for i in names]
    to_rules = [f"-o {i} -g {endpoint_chain(i, to_workload=True)}" for i in names]
    drop = f"{_comment('Unknown interface')} -j DROP"
    return {
        FROM_WL_DISPATCH: (*from_rules, drop),
        TO_WL_DISPATCH: (*to_rules, drop),
    }


def static_filter_chains(options: ChainOptions) -> dict[str, tuple[str, ...]]:
    """cali-FORWARD, cali-INPUT, cali-OUTPUT and cali-wl-to-host."""
    hosts = ipset_name(ALL_HOSTS_ID)
    vxlan_peers = ipset_name(ALL_VXLAN_ID)
    forward = (
        f"{_comment('Pre-clear marks')} {set_mark(0, MARK_ALL_CALICO & ~MARK_ACCEPT)}",
        f"-i {WORKLOAD_IFACE_WILDCARD} {_comment('From workload endpoint')} -j {FROM_WL_DISPATCH}",
        f"-o {WORKLOAD_IFACE_WILDCARD} {_comment('To workload endpoint')} -j {TO_WL_DISPATCH}",
        # Felix appends this to the kernel FORWARD chain; keeping it in our own chain means we
        # never edit rules we do not own.
        f"{_ACCEPT} {_comment('Policy explicitly accepted packet.')} -j ACCEPT",
    )
    input_rules: list[str] = []
    output_rules = [
        f"{_ACCEPT} -j ACCEPT",
        f"-o {WORKLOAD_IFACE_WILDCARD} -j RETURN",
    ]
    if options.ipip_enabled:
        input_rules += [
            f"-p 4 -m set --match-set {hosts} src -m addrtype --dst-type LOCAL "
            f"{_comment('Allow IPIP packets from Calico hosts')} -j ACCEPT",
            f"-p 4 {_comment('Drop IPIP packets from non-Calico hosts')} -j DROP",
        ]
        output_rules.append(
            f"-p 4 -m set --match-set {hosts} dst -m addrtype --src-type LOCAL "
            f"{_comment('Allow IPIP packets to other Calico hosts')} -j ACCEPT"
        )
    if options.vxlan_enabled:
        input_rules += [
            f"-p udp -m multiport --dports {VXLAN_PORT} -m set --match-set {vxlan_peers} src "
            "-m addrtype --dst-type LOCAL "
            f"{_comment('Allow IPv4 VXLAN packets from allowed hosts')} -j ACCEPT",
            f"-p udp -m multiport --dports {VXLAN_PORT} -m addrtype --dst-type LOCAL "
            f"{_comment('Drop IPv4 VXLAN packets from non-allowed hosts')} -j DROP",
        ]
        output_rules.append(
            f"-p udp -m multiport --dports {VXLAN_PORT} -m addrtype --src-type LOCAL "
            f"-m set --match-set {vxlan_peers} dst "
            f"{_comment('Allow IPv4 VXLAN packets to other allowed hosts')} -j ACCEPT"
        )
    input_rules.append(f"-i {WORKLOAD_IFACE_WILDCARD} -g {WL_TO_HOST}")
    action = options.endpoint_to_host_action.upper()
    if action not in ("DROP", "ACCEPT", "RETURN"):
        action = "DROP"
    wl_to_host = (
        f"-j {FROM_WL_DISPATCH}",
        f"{_comment('Configured DefaultEndpointToHostAction')} -j {action}",
    )
    return {
        FILTER_FORWARD: forward,
        FILTER_INPUT: tuple(input_rules),
        FILTER_OUTPUT: tuple(output_rules),
        WL_TO_HOST: wl_to_host,
    }


def nat_chains(options: ChainOptions) -> dict[str, tuple[str, ...]]:
    """cali-POSTROUTING and cali-nat-outgoing."""
    postrouting = [f"-j {NAT_OUTGOING}"]
    for enabled, dev in (
        (options.ipip_enabled, IPIP_DEVICE),
        (options.vxlan_enabled, VXLAN_DEVICE),
    ):
        if enabled:
            # Host-originated traffic into the tunnel takes the tunnel address as its source.
            postrouting.append(
                f"-o {dev} -m addrtype ! --src-type LOCAL --limit-iface-out "
                "-m addrtype --src-type LOCAL -j MASQUERADE --random-fully"
            )
    outgoing: tuple[str, ...] = ()
    if options.nat_outgoing:
        outgoing = (
            f"-m set --match-set {ipset_name(MASQ_POOLS_ID)} src "
            f"-m set ! --match-set {ipset_name(NETWORK_POOLS_ID)} dst "
            # Fully random source ports, as Felix does where iptables supports it (>= 1.6.2).
            "-j MASQUERADE --random-fully",
        )
    return {NAT_POSTROUTING: tuple(postrouting), NAT_OUTGOING: outgoing}


@dataclass(frozen=True, slots=True)
class Hook:
    """A jump from a kernel chain to ours. Apply with ``check_args`` (``-C``) then, if absent,
    ``insert_args`` (``-I``) so repeated applies never duplicate it."""

    table: str
    chain: str
    target: str

    @property
    def rule_spec(self) -> tuple[str, ...]:
        return ("-m", "comment", "--comment", "cali:hook", "-j", self.target)

    def check_args(self) -> list[str]:
        return ["-t", self.table, "-C", self.chain, *self.rule_spec]

    def insert_args(self) -> list[str]:
        return ["-t", self.table, "-I", self.chain, "1", *self.rule_spec]

    def delete_args(self) -> list[str]:
        return ["-t", self.table, "-D", self.chain, *self.rule_spec]


HOOKS: tuple[Hook, ...] = (
    Hook("filter", "INPUT", FILTER_INPUT),
    Hook("filter", "FORWARD", FILTER_FORWARD),
    Hook("filter", "OUTPUT", FILTER_OUTPUT),
    Hook("nat", "POSTROUTING", NAT_POSTROUTING),
)


def chain_references(rules: Iterable[str]) -> set[str]:
    """Chains a rule list jumps or goes to (for tests and sanity checks)."""
    out = set()
    for rule in rules:
        parts = rule.split()
        for flag in ("-j", "-g"):
            if flag in parts:
                target = parts[parts.index(flag) + 1]
                if target.startswith("cali"):
                    out.add(target)
    return out
