"""IP set membership for active selector and named-port sets (Felix's SelectorAndNamedPortIndex).

Members come from *every* endpoint in the cluster and every network set whose effective labels
match the set's selector (docs/felix-calc.md, "IP set members"). Members are refcounted, so two
items contributing the same CIDR do not conflict, and changes are accumulated as per-set
added/removed deltas until ``take_changes`` is called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from felix_client.calc.ipsetspec import IPSetSpec
from felix_client.calc.labelindex import LabelIndex
from felix_client.calc.model.objects import NamedPort

_ANY_PROTOCOLS = ("tcp", "udp")


class MemberSource(Protocol):
    """What an item contributes to sets: its IPv4 CIDRs and its named ports. Workload and host
    endpoints and network sets all fit."""

    @property
    def ipv4_nets(self) -> tuple[str, ...]: ...

    @property
    def ports(self) -> tuple[NamedPort, ...]: ...


def contributions(source: MemberSource, spec: IPSetSpec) -> Sequence[str]:
    """The members ``source`` adds to ``spec`` when its labels match the set's selector."""
    if not spec.port_name:
        return source.ipv4_nets
    if not source.ports:
        return ()
    out = []
    wanted = spec.protocol
    for port in source.ports:
        if port.name != spec.port_name:
            continue
        if port.protocol != wanted and not (wanted == "any" and port.protocol in _ANY_PROTOCOLS):
            continue
        for net in source.ipv4_nets:
            out.append(f"{net.partition('/')[0]},{port.protocol}:{port.port}")
    return out


@dataclass(slots=True)
class _SetState:
    spec: IPSetSpec
    members: dict[str, int] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class IPSetChanges:
    """Changes since the previous ``take_changes``. Created sets are reported with their full
    membership and never also in the member deltas."""

    created: dict[str, IPSetSpec]
    removed: frozenset[str]
    members_added: dict[str, frozenset[str]]
    members_removed: dict[str, frozenset[str]]


class IPSetMemberIndex:
    """Computes and maintains members of the active sets; see module docstring."""

    def __init__(self) -> None:
        self._index = LabelIndex(self._on_match_started, self._on_match_stopped)
        self._sources: dict[object, MemberSource] = {}
        self._sets: dict[str, _SetState] = {}
        self._sets_by_selector: dict[str, list[_SetState]] = {}
        self._created: set[str] = set()
        self._removed: set[str] = set()
        self._dirty: set[str] = set()

    # --- sets ----------------------------------------------------------------------------------

    def add_set(self, spec: IPSetSpec) -> None:
        """Start maintaining ``spec``'s members (no-op if already active)."""
        if spec.set_id in self._sets:
            return
        state = _SetState(spec)
        self._sets[spec.set_id] = state
        if spec.set_id in self._removed:
            # Removed and re-added between two flushes: report as a full rewrite.
            self._removed.discard(spec.set_id)
        self._created.add(spec.set_id)
        uid = spec.selector.uid
        siblings = self._sets_by_selector.get(uid)
        if siblings is None:
            self._sets_by_selector[uid] = [state]
            self._index.update_selector(uid, spec.selector)  # fires match-started callbacks
        else:
            siblings.append(state)
            for item in self._index.matches(uid):
                for member in contributions(self._sources[item], spec):
                    self._inc(state, member)

    def remove_set(self, set_id: str) -> None:
        """Stop maintaining a set; it is reported as removed at the next flush."""
        state = self._sets.pop(set_id, None)
        if state is None:
            return
        uid = state.spec.selector.uid
        siblings = self._sets_by_selector[uid]
        siblings.remove(state)
        if not siblings:
            del self._sets_by_selector[uid]
            self._index.remove_selector(uid)
        self._dirty.discard(set_id)
        if set_id in self._created:
            self._created.discard(set_id)
        else:
            self._removed.add(set_id)

    def members(self, set_id: str) -> frozenset[str]:
        state = self._sets.get(set_id)
        return frozenset(state.members) if state else frozenset()

    def specs(self) -> Iterable[IPSetSpec]:
        return (s.spec for s in self._sets.values())

    # --- items -----------------------------------------------------------------------------------

    def update_item(
        self,
        item: object,
        source: MemberSource,
        labels: Mapping[str, str],
        parents: tuple[str, ...],
    ) -> None:
        """Add or update an endpoint / network set."""
        old = self._sources.get(item)
        if old is not None and (old.ipv4_nets != source.ipv4_nets or old.ports != source.ports):
            # Re-base the contributions of the current matches on the new data before the label
            # update, so match-stopped callbacks remove exactly what was added.
            for uid in self._index.selectors_matching(item):
                for state in self._sets_by_selector.get(uid, ()):
                    for member in contributions(old, state.spec):
                        self._dec(state, member)
                    for member in contributions(source, state.spec):
                        self._inc(state, member)
        self._sources[item] = source
        self._index.update_item(item, labels, parents)

    def remove_item(self, item: object) -> None:
        if item not in self._sources:
            return
        self._index.remove_item(item)
        del self._sources[item]

    def update_parent_labels(self, parent: str, labels: Mapping[str, str] | None) -> None:
        self._index.update_parent_labels(parent, labels)

    # --- callbacks -------------------------------------------------------------------------------

    def _on_match_started(self, uid: object, item: object) -> None:
        source = self._sources[item]
        for state in self._sets_by_selector.get(uid, ()):  # type: ignore[arg-type]
            for member in contributions(source, state.spec):
                self._inc(state, member)

    def _on_match_stopped(self, uid: object, item: object) -> None:
        source = self._sources[item]
        for state in self._sets_by_selector.get(uid, ()):  # type: ignore[arg-type]
            for member in contributions(source, state.spec):
                self._dec(state, member)

    def _inc(self, state: _SetState, member: str) -> None:
        count = state.members.get(member, 0)
        state.members[member] = count + 1
        if count == 0:
            if member in state.removed:
                state.removed.discard(member)
            else:
                state.added.add(member)
            self._dirty.add(state.spec.set_id)

    def _dec(self, state: _SetState, member: str) -> None:
        count = state.members[member] - 1
        if count:
            state.members[member] = count
            return
        del state.members[member]
        if member in state.added:
            state.added.discard(member)
        else:
            state.removed.add(member)
        self._dirty.add(state.spec.set_id)

    # --- flushing --------------------------------------------------------------------------------

    def take_changes(self) -> IPSetChanges:
        """Return and reset the accumulated changes."""
        created = {sid: self._sets[sid].spec for sid in self._created}
        added: dict[str, frozenset[str]] = {}
        removed: dict[str, frozenset[str]] = {}
        for sid in self._dirty:
            state = self._sets[sid]
            if sid not in self._created:
                if state.added:
                    added[sid] = frozenset(state.added)
                if state.removed:
                    removed[sid] = frozenset(state.removed)
            state.added = set()
            state.removed = set()
        for sid in self._created:
            state = self._sets[sid]
            state.added = set()
            state.removed = set()
        changes = IPSetChanges(created, frozenset(self._removed), added, removed)
        self._created = set()
        self._removed = set()
        self._dirty = set()
        return changes
