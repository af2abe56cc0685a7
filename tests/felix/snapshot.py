"""What Felix programmed in a node namespace, normalized so two runs can be compared.

A snapshot holds `iptables-nft-save`, `ipset save` and `ip route` of the namespace.  Normalizing
drops what differs between two identical programmings: the save's "Generated/Completed" comments,
packet/byte counters, each ipset's random `initval` hash seed, and the order of tables, chains,
sets, set members and routes.  The order of rules *inside* a chain is kept, since it is meaning.
`diff` lists the differences as readable lines ("- " only in the first, "+ " only in the second).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from tests.dataplane.nstools import ns_out

_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")
# The kernel picks a random hash seed for each set; it says nothing about what was programmed.
_COMMENT = re.compile(r'-m comment --comment (?:"[^"]*"|\S+)\s*')
_INITVAL = re.compile(r"\s+initval 0x[0-9a-f]+")


@dataclass(frozen=True)
class Snapshot:
    iptables: dict[str, dict[str, tuple[str, ...]]]
    """table -> chain -> rules (the `-A chain` prefix removed), policies as `:policy X`."""
    ipsets: dict[str, tuple[str, frozenset[str]]]
    """set name -> (its create options, its members)."""
    routes: frozenset[str]

    def chains(self, table: str = "filter") -> set[str]:
        return set(self.iptables.get(table, {}))

    def flat(self, *, meaning: bool = False) -> set[str]:
        """Every fact of the snapshot as one line, for set-wise diffs.  With `meaning`, rule
        comments are dropped (Felix's rule hashes, our descriptions) and the rules of a chain
        become a sequence without empty rules (a comment-only rule does nothing)."""
        out: set[str] = set()
        for table, chains in self.iptables.items():
            for chain, rules in chains.items():
                out.add(f"iptables {table} chain {chain}")
                if meaning:
                    rules = without_comments(rules)
                for i, rule in enumerate(rules):
                    out.add(f"iptables {table} {chain} #{i}: {rule}")
        for name, (options, members) in self.ipsets.items():
            out.add(f"ipset {name} {options}")
            out.update(f"ipset {name} member {m}" for m in members)
        out.update(f"route {r}" for r in self.routes)
        return out


def without_comments(rules: tuple[str, ...]) -> tuple[str, ...]:
    """The rules with their comments removed, and comment-only rules (no-ops) dropped."""
    return tuple(r for r in (_COMMENT.sub("", x).strip() for x in rules) if r)


def parse_iptables(text: str) -> dict[str, dict[str, tuple[str, ...]]]:
    tables: dict[str, dict[str, list[str]]] = {}
    table: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = _COUNTERS.sub("", raw.strip())
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {})
        elif table is None:
            raise ValueError(f"iptables line outside a table: {raw!r}")
        elif line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            rules = table.setdefault(name, [])
            if policy != "-":
                rules.insert(0, f":policy {policy}")
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            table.setdefault(chain, []).append(rest[0] if rest else "")
        else:
            raise ValueError(f"unexpected iptables-save line: {raw!r}")
    return {t: {c: tuple(r) for c, r in chains.items()} for t, chains in tables.items()}


def parse_ipsets(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    headers: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["create"]:
            headers[parts[1]] = _INITVAL.sub("", " ".join(parts[2:]))
            members.setdefault(parts[1], set())
        elif parts[:1] == ["add"]:
            members.setdefault(parts[1], set()).add(" ".join(parts[2:]))
        elif parts:
            raise ValueError(f"unexpected ipset save line: {line!r}")
    return {name: (headers.get(name, "?"), frozenset(m)) for name, m in members.items()}


def parse_routes(text: str) -> frozenset[str]:
    return frozenset(" ".join(line.split()) for line in text.splitlines() if line.strip())


def parse(iptables: str, ipsets: str, routes: str) -> Snapshot:
    return Snapshot(parse_iptables(iptables), parse_ipsets(ipsets), parse_routes(routes))


def take(ns: str) -> Snapshot:
    """Snapshot of namespace `ns` (iptables through the nft backend Felix was told to use)."""
    return parse(
        ns_out(ns, "iptables-nft-save"),
        ns_out(ns, "ipset", "save"),
        ns_out(ns, "ip", "-4", "route", "show", "table", "all"),
    )


def diff(a: Snapshot, b: Snapshot, *, meaning: bool = False) -> list[str]:
    fa, fb = a.flat(meaning=meaning), b.flat(meaning=meaning)
    return [f"- {x}" for x in sorted(fa - fb)] + [f"+ {x}" for x in sorted(fb - fa)]


_SELECTOR_SET = re.compile(r"\bcali40[sn]:[A-Za-z0-9_-]+")


def sets_by_content(snap: Snapshot) -> Snapshot:
    """`snap` with each selector/named-port set (`cali40s:`, `cali40n:`) renamed after its type
    and members, in the sets and in every rule that matches on them.  Two programs whose
    selector canonicalisation differs (the set name is a hash of the canonical selector) then
    compare by what the sets hold; two sets with the same members become one name, which means
    the same on this dataplane."""
    renames = {}
    for name, (options, members) in snap.ipsets.items():
        if _SELECTOR_SET.fullmatch(name):
            digest = hashlib.sha1(repr((options, sorted(members))).encode()).hexdigest()[:12]
            renames[name] = f"{name[:7]}content-{digest}"

    def rename(text: str) -> str:
        return _SELECTOR_SET.sub(lambda m: renames.get(m.group(0), m.group(0)), text)

    iptables = {
        t: {c: tuple(rename(r) for r in rules) for c, rules in chains.items()}
        for t, chains in snap.iptables.items()
    }
    ipsets = {renames.get(n, n): v for n, v in snap.ipsets.items()}
    return Snapshot(iptables, ipsets, snap.routes)
