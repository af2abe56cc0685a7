"""Desired chains of one iptables table, with change tracking between flushes."""

from __future__ import annotations

from collections.abc import Iterator

Rules = tuple[str, ...]


class ChainTable:
    """Chain name → rule specs. Remembers each chain's content at the previous
    ``take_changes`` so that a chain rewritten to the same content is not reported."""

    def __init__(self) -> None:
        self._chains: dict[str, Rules] = {}
        self._before: dict[str, Rules | None] = {}

    def set(self, name: str, rules: Rules | None) -> None:
        """Set a chain's content; ``None`` removes it."""
        current = self._chains.get(name)
        if current == rules:
            return
        if name not in self._before:
            self._before[name] = current
        if rules is None:
            del self._chains[name]
        else:
            self._chains[name] = rules

    def get(self, name: str) -> Rules | None:
        return self._chains.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._chains)

    def snapshot(self) -> dict[str, Rules]:
        return dict(self._chains)

    def take_changes(self) -> tuple[dict[str, Rules], frozenset[str]]:
        """(chains whose content changed, chains removed) since the previous call."""
        changed: dict[str, Rules] = {}
        removed: set[str] = set()
        for name, old in self._before.items():
            new = self._chains.get(name)
            if new == old:
                continue
            if new is None:
                removed.add(name)
            else:
                changed[name] = new
        self._before = {}
        return changed, frozenset(removed)
