"""Verdicts of two programmed dataplanes compared packet by packet, in the iptables simulator.

Where felix_client renders a policy differently from Felix (another mark choreography for a rule
with several OR groups, a notSelector as its own set instead of folded into the selector's), a
text diff shows the difference but not whether it matters.  This runs the same random packets
through each local endpoint's to- and from-workload chains of both snapshots
(`tests/calc/iptsim.py`, which fails loudly on a rule it does not understand) and lists the
packets whose verdict differs: the meaning check behind the random-cluster entries of the
expected-diff file.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from tests.calc.iptsim import IpsetSim, IptablesSim, SimPacket
from tests.felix.snapshot import Snapshot, without_comments

ACCEPT_MARK = 0x10000
EXTERNAL_IPS = ("172.16.5.9", "8.8.8.8", "10.0.9.77", "10.4.38.7", "192.0.1.9", "10.0.0.21")


def simulator(snap: Snapshot, table: str = "filter") -> IptablesSim:
    lines = []
    for chain, rules in snap.iptables.get(table, {}).items():
        lines.append(f":{chain} - [0:0]")
        # Comments go (Felix writes comment-only rules, which do nothing).
        lines.extend(f"-A {chain} {r}" for r in without_comments(rules) if not r.startswith(":"))
    sets = []
    for name, (options, members) in snap.ipsets.items():
        sets.append(f"create {name} {options}")
        sets.extend(f"add {name} {m}" for m in sorted(members))
    return IptablesSim("\n".join(lines), IpsetSim("\n".join(sets)))


@dataclass(frozen=True)
class Probe:
    chain: str
    packet: tuple


def _packet(rng: random.Random, own_ip: str, peers: list[str], ingress: bool) -> tuple:
    other = rng.choice(peers)
    proto = rng.choice((6, 6, 17, 17, 1, 132))
    sport = dport = icmp_type = icmp_code = None
    if proto in (6, 17, 132):
        sport = rng.choice((53, 80, 443, 1003, 2003, 8080, 40000))
        dport = rng.choice((22, 53, 80, 443, 1500, 2004, 8080, 9100))
    else:
        icmp_type, icmp_code = rng.choice((0, 8, 3)), rng.choice((0, 1))
    src, dst = (other, own_ip) if ingress else (own_ip, other)
    return (src, dst, proto, sport, dport, icmp_type, icmp_code)


def verdict(sim: IptablesSim, chain: str, iface: str, packet: tuple, ingress: bool) -> tuple:
    src, dst, proto, sport, dport, icmp_type, icmp_code = packet
    pkt = SimPacket(src, dst, proto, sport, dport, icmp_type, icmp_code)
    if ingress:
        pkt.oif = iface
    else:
        pkt.iif = iface
    result = sim.run(chain, pkt)
    return (result, bool(pkt.mark & ACCEPT_MARK))


def differing_verdicts(
    a: Snapshot,
    b: Snapshot,
    endpoints: dict[str, str],
    peer_ips: Iterable[str],
    *,
    seed: int,
    packets_per_chain: int = 200,
) -> list[str]:
    """Packets (per local endpoint {iface: ip}, both directions) whose verdict differs."""
    rng = random.Random(seed)
    sim_a, sim_b = simulator(a), simulator(b)
    peers = sorted(set(peer_ips) | set(EXTERNAL_IPS))
    out = []
    for iface, ip in sorted(endpoints.items()):
        for ingress, chain in ((True, f"cali-tw-{iface}"), (False, f"cali-fw-{iface}")):
            for _ in range(packets_per_chain):
                packet = _packet(rng, ip, peers, ingress)
                va = verdict(sim_a, chain, iface, packet, ingress)
                vb = verdict(sim_b, chain, iface, packet, ingress)
                if va != vb:
                    out.append(f"{chain} {packet}: {va} vs {vb}")
    return out
