"""``iptables-restore --noflush`` transactions for the kernel backend (docs/dataplane.md).

Each table is written by one ``iptables-restore --noflush`` call per apply. With ``--noflush``
only the chains the input declares are flushed and rewritten, and with the nft backend the whole
input is committed as one transaction: either every chain changes or none does. The input
declares only ``cali-*`` chains, so kernel chains and anybody else's chains are never touched;
the only edits outside our chains are the hook jumps, inserted once with ``iptables -I`` after
``iptables -C`` found them missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from felix_client.calc.render.chains import HOOKS, Hook
from felix_client.calc.render.text import iptables_restore
from felix_client.calc.state import DataplaneDelta

TABLES = ("filter", "nat")
CHAIN_PREFIX = "cali-"


def delta_texts(delta: DataplaneDelta) -> dict[str, str]:
    """{table: restore input} for the tables the delta touches."""
    out = {}
    changes = {
        "filter": (delta.filter_chains_changed, delta.filter_chains_removed),
        "nat": (delta.nat_chains_changed, delta.nat_chains_removed),
    }
    for table, (changed, removed) in changes.items():
        if changed or removed:
            out[table] = iptables_restore(table, changed, removed)
    return out


def full_text(table: str, chains: Mapping[str, tuple[str, ...]], existing: set[str]) -> str:
    """Rewrite every desired chain of ``table`` and delete our chains that are not desired."""
    return iptables_restore(table, chains, removed=existing - set(chains))


def parse_save(output: str) -> dict[str, dict[str, list[str]]]:
    """``iptables-save`` output → {table: {chain: [rule specs]}} (all chains, ours or not)."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in output.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), {})
        elif current is None or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            current.setdefault(chain, []).append(rule)
    return tables


def our_chains(saved: Mapping[str, list[str]]) -> set[str]:
    return {name for name in saved if name.startswith(CHAIN_PREFIX)}


def hooks_for(tables_with_chains: Mapping[str, set[str]]) -> list[Hook]:
    """The hooks whose target chain exists (so ``-I`` cannot fail on a missing target)."""
    return [h for h in HOOKS if h.target in tables_with_chains.get(h.table, set())]
