"""A tiny iptables + ipset simulator for the rule text this project renders.

It understands exactly the subset the renderer emits (marks, jumps, goto, RETURN, ACCEPT, DROP,
LOG, MARK --set-xmark, -p/-s/-d/-i/-o with negation, -m set, -m multiport, -m icmp, -m mark,
-m conntrack, -m comment, -m addrtype) and fails loudly on anything else, so a renderer change that
emits something new cannot silently pass the cross-check.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "udplite": 136, "ipencap": 4}


@dataclass
class SimPacket:
    src: str
    dst: str
    protocol: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    iif: str = ""
    oif: str = ""
    mark: int = 0
    ctstate: str = "NEW"
    log: list[str] = field(default_factory=list)


Match = Callable[[SimPacket], bool]


@dataclass
class SimRule:
    text: str
    matches: list[Match]
    target: str
    goto: bool = False
    xmark: tuple[int, int] | None = None


class UnsupportedRule(Exception):
    pass


def _iface_match(pattern: str, name: str) -> bool:
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _ports_match(spec: str, port: int | None) -> bool:
    if port is None:
        return False
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        if int(lo) <= port <= int(hi or lo):
            return True
    return False


class IpsetSim:
    def __init__(self, text: str = "") -> None:
        self.sets: dict[str, tuple[str, set[str]]] = {}
        for line in text.splitlines():
            parts = line.split()
            if not parts or parts[0] == "COMMIT":
                continue
            if parts[0] == "create":
                self.sets[parts[1]] = (parts[2], set())
            elif parts[0] == "flush":
                self.sets[parts[1]][1].clear()
            elif parts[0] == "add":
                self.sets[parts[1]][1].add(parts[2])
            elif parts[0] == "del":
                self.sets[parts[1]][1].discard(parts[2])
            elif parts[0] == "destroy":
                del self.sets[parts[1]]
            else:
                raise UnsupportedRule(line)

    def contains(self, name: str, pkt: SimPacket, dirs: list[str]) -> bool:
        kind, members = self.sets[name]
        ip = pkt.src if dirs[0] == "src" else pkt.dst
        if kind == "hash:net":
            addr = ipaddress.IPv4Address(ip)
            return any(addr in ipaddress.IPv4Network(m) for m in members)
        if kind == "hash:ip,port":
            port = pkt.sport if dirs[1] == "src" else pkt.dport
            proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(pkt.protocol)
            if proto is None or port is None:
                return False
            return f"{ip},{proto}:{port}" in members
        raise UnsupportedRule(kind)


class IptablesSim:
    """Parses ``iptables-restore`` text for one table and runs packets through its chains."""

    def __init__(self, table_text: str, ipsets: IpsetSim, local_ips: frozenset[str] = frozenset()):
        self.ipsets = ipsets
        self.local_ips = local_ips
        self.chains: dict[str, list[SimRule]] = {}
        for line in table_text.splitlines():
            if line.startswith(":"):
                self.chains[line[1:].split()[0]] = []
            elif line.startswith("-A "):
                chain, _, rest = line[3:].partition(" ")
                self.chains[chain].append(self._parse(rest))
            elif line.startswith("-X "):
                self.chains.pop(line[3:].strip(), None)

    def _parse(self, text: str) -> SimRule:
        tokens = shlex.split(text)
        matches: list[Match] = []
        target = ""
        goto = False
        xmark = None
        i = 0
        negate = False
        module = ""

        def add(fn: Match) -> None:
            nonlocal negate
            if negate:
                matches.append(lambda p, fn=fn: not fn(p))
            else:
                matches.append(fn)
            negate = False

        while i < len(tokens):
            tok = tokens[i]
            arg = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok == "!":
                negate = True
                i += 1
                continue
            if tok == "-m":
                module = arg
                if module not in (
                    "set",
                    "multiport",
                    "icmp",
                    "mark",
                    "conntrack",
                    "comment",
                    "addrtype",
                ):
                    raise UnsupportedRule(text)
                i += 2
                continue
            if tok == "-p":
                proto = PROTOCOLS[arg] if arg in PROTOCOLS else int(arg)
                add(lambda p, proto=proto: p.protocol == proto)
                i += 2
            elif tok in ("-s", "-d"):
                net = ipaddress.IPv4Network(arg)
                if tok == "-s":
                    add(lambda p, net=net: ipaddress.IPv4Address(p.src) in net)
                else:
                    add(lambda p, net=net: ipaddress.IPv4Address(p.dst) in net)
                i += 2
            elif tok in ("-i", "-o"):
                if tok == "-i":
                    add(lambda p, pat=arg: _iface_match(pat, p.iif))
                else:
                    add(lambda p, pat=arg: _iface_match(pat, p.oif))
                i += 2
            elif tok == "--match-set":
                dirs = tokens[i + 2].split(",")
                add(lambda p, n=arg, d=dirs: self.ipsets.contains(n, p, d))
                i += 3
            elif tok in ("--sports", "--dports"):
                assert module == "multiport", text
                if tok == "--sports":
                    add(lambda p, s=arg: _ports_match(s, p.sport))
                else:
                    add(lambda p, s=arg: _ports_match(s, p.dport))
                i += 2
            elif tok == "--icmp-type":
                t, _, c = arg.partition("/")
                add(
                    lambda p, t=int(t), c=(int(c) if c else None): (
                        p.protocol == 1 and p.icmp_type == t and (c is None or p.icmp_code == c)
                    )
                )
                i += 2
            elif tok == "--mark":
                value, mask = (int(x, 16) for x in arg.split("/"))
                add(lambda p, v=value, m=mask: p.mark & m == v)
                i += 2
            elif tok == "--ctstate":
                states = set(arg.split(","))
                add(lambda p, s=states: p.ctstate in s)
                i += 2
            elif tok == "--comment":
                i += 2
            elif tok in ("--dst-type", "--src-type"):
                assert arg == "LOCAL"
                if tok == "--dst-type":
                    add(lambda p: p.dst in self.local_ips)
                else:
                    add(lambda p: p.src in self.local_ips)
                i += 2
            elif tok == "--limit-iface-out":
                i += 1
            elif tok in ("-j", "-g"):
                target = arg
                goto = tok == "-g"
                i += 2
                if target == "MARK":
                    assert tokens[i] == "--set-xmark", text
                    value, mask = (int(x, 16) for x in tokens[i + 1].split("/"))
                    xmark = (value, mask)
                    i += 2
                elif target == "LOG":
                    while i < len(tokens) and tokens[i] in ("--log-prefix", "--log-level"):
                        i += 2
                elif target == "MASQUERADE" and tokens[i : i + 1] == ["--random-fully"]:
                    i += 1  # source-port choice only: the same verdict
            else:
                raise UnsupportedRule(f"{tok!r} in {text!r}")
        if not target:
            raise UnsupportedRule(f"no target in {text!r}")
        self._validate(tokens, text)
        return SimRule(text, matches, target, goto, xmark)

    @staticmethod
    def _validate(tokens: list[str], text: str) -> None:
        """Constraints iptables itself enforces on a rule."""
        for flag in ("-p", "-s", "-d", "-i", "-o"):
            if tokens.count(flag) > 1:
                raise UnsupportedRule(f"{flag} given twice: {text!r}")
        for i, tok in enumerate(tokens):
            if tok in ("--sports", "--dports"):
                entries = tokens[i + 1].split(",")
                slots = sum(2 if ":" in e else 1 for e in entries)
                if slots > 15:
                    raise UnsupportedRule(f"multiport with {slots} slots: {text!r}")
                if "-p" not in tokens:
                    raise UnsupportedRule(f"multiport without -p: {text!r}")
                proto = tokens[tokens.index("-p") + 1]
                if tokens[tokens.index("-p") - 1] == "!" or proto not in (
                    "tcp",
                    "udp",
                    "sctp",
                    "udplite",
                    "6",
                    "17",
                    "132",
                    "136",
                ):
                    raise UnsupportedRule(f"multiport needs a port protocol: {text!r}")
            if tok == "--icmp-type" and (
                "-p" not in tokens or tokens[tokens.index("-p") + 1] != "icmp"
            ):
                raise UnsupportedRule(f"icmp match without -p icmp: {text!r}")

    def run(self, chain: str, pkt: SimPacket, depth: int = 0) -> str | None:
        """Run ``pkt`` through ``chain``: ``"ACCEPT"``/``"DROP"``/``"MASQUERADE"`` for a terminal
        verdict, ``None`` when the chain returns to its caller."""
        if depth > 50:
            raise RuntimeError("chain loop")
        for rule in self.chains[chain]:
            if not all(m(pkt) for m in rule.matches):
                continue
            t = rule.target
            if t in ("ACCEPT", "DROP", "MASQUERADE"):
                return t
            if t == "RETURN":
                return None
            if t == "MARK":
                assert rule.xmark is not None
                value, mask = rule.xmark
                pkt.mark = (pkt.mark & ~mask) ^ value
                continue
            if t == "LOG":
                pkt.log.append(rule.text)
                continue
            if t not in self.chains:
                raise UnsupportedRule(f"jump to undeclared chain {t}")
            result = self.run(t, pkt, depth + 1)
            if rule.goto or result is not None:
                return result
        return None
