"""An incremental index of which selectors match which labelled items.

Items are endpoints (workload, host) and network sets; their *effective* labels are their own
labels overlaid on the labels of their parents (profiles) in order — the item's own labels win,
then earlier parents over later ones (docs/felix-calc.md, "Label index").

The index reports ``match started`` / ``match stopped`` events through callbacks. It never scans
every item for every selector: items are indexed by (label, value), and each selector is indexed by
a *restriction* — a necessary condition derived from its equality / ``in`` / ``has`` terms. An
item change only evaluates the selectors whose restriction it satisfies, and a new selector only
evaluates the items that satisfy its restriction. Selectors without a usable restriction (``all()``,
``!has(x)``, ``a != 'b'``…) fall back to a scan.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from felix_client.calc.selector import Restriction, Selector, restrictions

Item = Hashable
SelId = Hashable
MatchCallback = Callable[[SelId, Item], None]

_EMPTY: frozenset = frozenset()


def _noop(sel_id: SelId, item: Item) -> None:
    return None


class LabelIndex:
    """Selector-by-item match index with incremental updates (see module docstring)."""

    def __init__(
        self,
        on_match_started: MatchCallback | None = None,
        on_match_stopped: MatchCallback | None = None,
    ) -> None:
        self.on_match_started = on_match_started or _noop
        self.on_match_stopped = on_match_stopped or _noop
        # Items. _items_by_kv holds, for each *indexed* label key, value → items with that value.
        self._own: dict[Item, Mapping[str, str]] = {}
        self._parents: dict[Item, tuple[str, ...]] = {}
        self._labels: dict[Item, Mapping[str, str]] = {}
        self._parent_labels: dict[str, Mapping[str, str]] = {}
        self._parent_items: dict[str, set[Item]] = {}
        self._inherited: dict[tuple[str, ...], dict[str, str]] = {}
        self._items_by_kv: dict[str, dict[str, set[Item]]] = {}
        # Selectors.
        self._selectors: dict[SelId, Selector] = {}
        self._restriction: dict[SelId, Restriction | None] = {}
        self._sels_by_kv: dict[str, dict[str, set[SelId]]] = {}
        self._sels_by_key: dict[str, set[SelId]] = {}
        self._unrestricted: set[SelId] = set()
        # Matches.
        self._sel_matches: dict[SelId, set[Item]] = {}
        self._item_matches: dict[Item, set[SelId]] = {}

    # --- queries ---------------------------------------------------------------------------------

    def matches(self, sel_id: SelId) -> frozenset[Item] | set[Item]:
        """Items currently matching ``sel_id`` (a live view: do not mutate)."""
        return self._sel_matches.get(sel_id, _EMPTY)

    def selectors_matching(self, item: Item) -> frozenset[SelId] | set[SelId]:
        """Selectors currently matching ``item`` (a live view: do not mutate)."""
        return self._item_matches.get(item, _EMPTY)

    def labels(self, item: Item) -> Mapping[str, str] | None:
        """Effective labels of ``item`` (``None`` if unknown)."""
        return self._labels.get(item)

    def items(self) -> Iterable[Item]:
        return self._labels.keys()

    def selector_ids(self) -> Iterable[SelId]:
        return self._selectors.keys()

    def __contains__(self, item: Item) -> bool:
        return item in self._labels

    # --- items -----------------------------------------------------------------------------------

    def update_item(
        self, item: Item, labels: Mapping[str, str], parents: Sequence[str] = ()
    ) -> None:
        """Add or update an item with its own labels and ordered parent IDs."""
        parents = tuple(parents)
        old_parents = self._parents.get(item, ())
        if old_parents != parents:
            for p in old_parents:
                members = self._parent_items.get(p)
                if members is not None:
                    members.discard(item)
                    if not members:
                        del self._parent_items[p]
            for p in parents:
                self._parent_items.setdefault(p, set()).add(item)
        self._own[item] = labels
        self._parents[item] = parents
        self._relabel(item, self._effective(labels, parents))

    def remove_item(self, item: Item) -> None:
        """Remove an item; stops all of its matches."""
        if item not in self._labels:
            return
        for p in self._parents.pop(item, ()):
            members = self._parent_items.get(p)
            if members is not None:
                members.discard(item)
                if not members:
                    del self._parent_items[p]
        del self._own[item]
        old = self._labels.pop(item)
        self._reindex(item, old, None)
        for sel_id in self._item_matches.pop(item, ()):
            matches = self._sel_matches[sel_id]
            matches.discard(item)
            self.on_match_stopped(sel_id, item)

    def update_parent_labels(self, parent: str, labels: Mapping[str, str] | None) -> None:
        """Set (or, with ``None``, delete) a parent's labels; re-evaluates only its inheritors."""
        if labels is None:
            if self._parent_labels.pop(parent, None) is None:
                return
        else:
            if self._parent_labels.get(parent) == labels:
                return
            self._parent_labels[parent] = labels
        self._inherited = {k: v for k, v in self._inherited.items() if parent not in k}
        for item in list(self._parent_items.get(parent, ())):
            self._relabel(item, self._effective(self._own[item], self._parents[item]))

    def _effective(self, own: Mapping[str, str], parents: tuple[str, ...]) -> Mapping[str, str]:
        if not parents:
            return own
        # Thousands of endpoints share a few parent lists (namespace + service account), so the
        # merged parent labels are cached per list.
        inherited = self._inherited.get(parents)
        if inherited is None:
            merged: dict[str, str] = {}
            for p in reversed(parents):
                pl = self._parent_labels.get(p)
                if pl:
                    merged.update(pl)
            inherited = self._inherited[parents] = merged
        if not inherited:
            return own
        out = dict(inherited)
        out.update(own)
        return out

    def _relabel(self, item: Item, labels: Mapping[str, str]) -> None:
        old = self._labels.get(item)
        if old is not None and old == labels:
            return
        self._labels[item] = labels
        if self._items_by_kv:
            self._reindex(item, old, labels)
        old_matches = self._item_matches.get(item, _EMPTY)
        candidates = self._candidate_selectors(labels)
        if not candidates and not old_matches:
            return
        selectors = self._selectors
        new_matches = {s for s in candidates if selectors[s].matches(labels)}
        if new_matches:
            self._item_matches[item] = new_matches
        else:
            self._item_matches.pop(item, None)
        for sel_id in old_matches - new_matches if old_matches else ():
            self._sel_matches[sel_id].discard(item)
            self.on_match_stopped(sel_id, item)
        for sel_id in new_matches - old_matches if old_matches else new_matches:
            self._sel_matches[sel_id].add(item)
            self.on_match_started(sel_id, item)

    def _reindex(
        self, item: Item, old: Mapping[str, str] | None, new: Mapping[str, str] | None
    ) -> None:
        # Only keys some selector restriction uses are indexed (see _ensure_key_indexed); there
        # are few of them, so this is cheaper than indexing every label of every item.
        for k, by_v in self._items_by_kv.items():
            ov = old.get(k) if old is not None else None
            nv = new.get(k) if new is not None else None
            if ov == nv:
                continue
            if ov is not None:
                members = by_v[ov]
                members.discard(item)
                if not members:
                    del by_v[ov]
            if nv is not None:
                members = by_v.get(nv)
                if members is None:
                    by_v[nv] = {item}
                else:
                    members.add(item)

    def _ensure_key_indexed(self, key: str) -> dict[str, set[Item]]:
        by_v = self._items_by_kv.get(key)
        if by_v is None:
            by_v = {}
            for item, labels in self._labels.items():
                v = labels.get(key)
                if v is not None:
                    members = by_v.get(v)
                    if members is None:
                        by_v[v] = {item}
                    else:
                        members.add(item)
            self._items_by_kv[key] = by_v
        return by_v

    def _candidate_selectors(self, labels: Mapping[str, str]) -> set[SelId] | frozenset[SelId]:
        candidates: set[SelId] | None = set(self._unrestricted) if self._unrestricted else None
        # Walk the restricted keys (few) rather than the item's labels.
        for k, by_v in self._sels_by_kv.items():
            v = labels.get(k)
            if v is not None:
                sels = by_v.get(v)
                if sels:
                    if candidates is None:
                        candidates = set(sels)
                    else:
                        candidates |= sels
        for k, sels in self._sels_by_key.items():
            if k in labels:
                if candidates is None:
                    candidates = set(sels)
                else:
                    candidates |= sels
        return _EMPTY if candidates is None else candidates

    # --- selectors -------------------------------------------------------------------------------

    def update_selector(self, sel_id: SelId, selector: Selector) -> None:
        """Add a selector (or replace the selector registered under ``sel_id``)."""
        old = self._selectors.get(sel_id)
        if old is not None:
            if old.canonical == selector.canonical:
                return
            self._unindex_selector(sel_id)
        self._selectors[sel_id] = selector
        restriction = self._choose_restriction(selector)
        self._restriction[sel_id] = restriction
        if restriction is None:
            self._unrestricted.add(sel_id)
            candidates: Iterable[Item] = self._labels.keys()
        else:
            candidates = self._candidate_items(restriction)
            for k, values in restriction:
                if values is None:
                    self._sels_by_key.setdefault(k, set()).add(sel_id)
                else:
                    by_v = self._sels_by_kv.setdefault(k, {})
                    for v in values:
                        by_v.setdefault(v, set()).add(sel_id)
        matches = self._sel_matches.get(sel_id)
        old_matches: set[Item] = set(matches) if matches else set()
        labels = self._labels
        match = selector.matches
        new_matches = {item for item in candidates if match(labels[item])}
        self._sel_matches[sel_id] = new_matches
        for item in old_matches - new_matches:
            item_sels = self._item_matches[item]
            item_sels.discard(sel_id)
            if not item_sels:
                del self._item_matches[item]
            self.on_match_stopped(sel_id, item)
        for item in new_matches - old_matches:
            item_sels = self._item_matches.get(item)
            if item_sels is None:
                self._item_matches[item] = {sel_id}
            else:
                item_sels.add(sel_id)
            self.on_match_started(sel_id, item)

    def remove_selector(self, sel_id: SelId) -> None:
        """Remove a selector; stops all of its matches."""
        if sel_id not in self._selectors:
            return
        self._unindex_selector(sel_id)
        del self._selectors[sel_id]
        for item in self._sel_matches.pop(sel_id, ()):
            item_sels = self._item_matches[item]
            item_sels.discard(sel_id)
            if not item_sels:
                del self._item_matches[item]
            self.on_match_stopped(sel_id, item)

    def _unindex_selector(self, sel_id: SelId) -> None:
        restriction = self._restriction.pop(sel_id)
        if restriction is None:
            self._unrestricted.discard(sel_id)
            return
        for k, values in restriction:
            if values is None:
                sels = self._sels_by_key[k]
                sels.discard(sel_id)
                if not sels:
                    del self._sels_by_key[k]
            else:
                by_v = self._sels_by_kv[k]
                for v in values:
                    sels = by_v[v]
                    sels.discard(sel_id)
                    if not sels:
                        del by_v[v]
                if not by_v:
                    del self._sels_by_kv[k]

    def _restriction_cost(self, restriction: Restriction) -> int:
        cost = 0
        for k, values in restriction:
            by_v = self._ensure_key_indexed(k)
            if not by_v:
                continue
            if values is None:
                cost += sum(len(members) for members in by_v.values())
            else:
                cost += sum(len(by_v.get(v, ())) for v in values)
        return cost

    def _choose_restriction(self, selector: Selector) -> Restriction | None:
        options = restrictions(selector.root)
        if not options:
            return None
        # Pick the option with the fewest current candidates; the choice stays valid (it is a
        # necessary condition) even when the label statistics change later.
        return min(options, key=self._restriction_cost)

    def _candidate_items(self, restriction: Restriction) -> set[Item]:
        out: set[Item] = set()
        for k, values in restriction:
            by_v = self._ensure_key_indexed(k)
            if not by_v:
                continue
            if values is None:
                for members in by_v.values():
                    out |= members
            else:
                for v in values:
                    members = by_v.get(v)
                    if members:
                        out |= members
        return out
