"""The calculation's output: the full desired dataplane (``DataplaneState``) and the change since
the previous flush (``DataplaneDelta``). Plain immutable data; no I/O.

Apply order for a delta (what the kernel applier must do so nothing references a missing object):

1. ipsets: create ``ipsets_created``, then ``ipset_members_removed`` / ``ipset_members_added``;
2. iptables: filter and nat ``*_chains_changed`` with ``*_chains_removed`` deleted in the same
   ``iptables-restore --noflush`` transaction (see ``render.text.iptables_restore``);
3. ipsets: destroy ``ipsets_removed`` (no longer referenced now);
4. routes: delete ``routes_removed``, VTEP neighbour/FDB changes, then replace ``routes_added``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class IPSet:
    """One kernel ipset: ``type`` is ``hash:net`` or ``hash:ip,port``."""

    name: str
    type: str
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class Route:
    """One IPv4 route in the main table."""

    dst: str
    type: str = "unicast"  # or "blackhole"
    via: str | None = None
    dev: str | None = None
    onlink: bool = False
    scope_link: bool = False
    proto: int | None = 80  # None: the kernel default (boot), which ``ip route`` hides
    mtu: int | None = None  # a route MTU (the VXLAN MTU on routes through vxlan.calico)

    def render(self) -> str:
        """``ip route`` syntax, e.g. ``10.0.2.0/26 via 10.0.0.12 dev tunl0 onlink proto 80``."""
        parts = ["blackhole", self.dst] if self.type == "blackhole" else [self.dst]
        if self.via:
            parts += ["via", self.via]
        if self.dev:
            parts += ["dev", self.dev]
        if self.onlink:
            parts.append("onlink")
        if self.scope_link:
            parts += ["scope", "link"]
        if self.proto is not None:
            parts += ["proto", str(self.proto)]
        if self.mtu is not None:
            parts += ["mtu", str(self.mtu)]
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent ARP entry (remote VTEP IP → VTEP MAC on the VXLAN device)."""

    ip: str
    mac: str
    dev: str

    def render(self) -> str:
        return f"neigh {self.ip} lladdr {self.mac} dev {self.dev} nud permanent"


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A VXLAN forwarding entry (VTEP MAC → remote node IP)."""

    mac: str
    dst: str
    dev: str

    def render(self) -> str:
        return f"fdb {self.mac} dev {self.dev} dst {self.dst} self permanent"


@dataclass(frozen=True)
class DataplaneState:
    """Everything this node should program, keyed for diffing."""

    ipsets: dict[str, IPSet] = field(default_factory=dict)
    filter_chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nat_chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)  # by dst CIDR
    neighbours: dict[str, Neighbour] = field(default_factory=dict)  # by IP
    fdb: dict[str, FdbEntry] = field(default_factory=dict)  # by MAC


@dataclass(frozen=True)
class DataplaneDelta:
    """Changes since the previous flush (see the module docstring for the apply order).

    A set in ``ipsets_created`` carries its full membership and has no member deltas; a chain in
    ``*_chains_changed`` carries its full new content; a route in ``routes_added`` replaces any
    previous route to the same dst.
    """

    ipsets_created: dict[str, IPSet] = field(default_factory=dict)
    ipset_members_added: dict[str, frozenset[str]] = field(default_factory=dict)
    ipset_members_removed: dict[str, frozenset[str]] = field(default_factory=dict)
    ipsets_removed: frozenset[str] = frozenset()
    filter_chains_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    filter_chains_removed: frozenset[str] = frozenset()
    nat_chains_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nat_chains_removed: frozenset[str] = frozenset()
    routes_added: dict[str, Route] = field(default_factory=dict)
    routes_removed: frozenset[str] = frozenset()
    neighbours_added: dict[str, Neighbour] = field(default_factory=dict)
    neighbours_removed: frozenset[str] = frozenset()
    fdb_added: dict[str, FdbEntry] = field(default_factory=dict)
    fdb_removed: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f) for f in self.__dataclass_fields__)

    def apply_to(self, state: DataplaneState) -> DataplaneState:
        """The state that results from applying this delta to ``state`` (for tests and dry runs)."""
        ipsets = dict(state.ipsets)
        for name in self.ipsets_removed:
            ipsets.pop(name, None)
        ipsets.update(self.ipsets_created)
        for name, members in self.ipset_members_removed.items():
            ipsets[name] = replace(ipsets[name], members=ipsets[name].members - members)
        for name, members in self.ipset_members_added.items():
            ipsets[name] = replace(ipsets[name], members=ipsets[name].members | members)
        return DataplaneState(
            ipsets=ipsets,
            filter_chains=_apply(
                state.filter_chains, self.filter_chains_changed, self.filter_chains_removed
            ),
            nat_chains=_apply(state.nat_chains, self.nat_chains_changed, self.nat_chains_removed),
            routes=_apply(state.routes, self.routes_added, self.routes_removed),
            neighbours=_apply(state.neighbours, self.neighbours_added, self.neighbours_removed),
            fdb=_apply(state.fdb, self.fdb_added, self.fdb_removed),
        )


def _apply(base: dict, added: dict, removed: frozenset) -> dict:
    out = {k: v for k, v in base.items() if k not in removed}
    out.update(added)
    return out
