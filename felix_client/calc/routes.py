"""Routes, VXLAN neighbours and FDB entries for this node (docs/felix-calc.md, "Routes").

Each route comes from a *source*: a local workload (``/32 dev <iface> scope link``), an IPAM
block (own → blackhole; remote → via the owning node, tunnelled as its pool says) or a remote
workload whose IP is "borrowed" — it lies in a block not affine to the workload's node — which gets
a ``/32`` via its own node. Sources are recomputed only when something they depend on changes, and
route changes accumulate until ``take_changes``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass

from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.objects import Block, EncapMode, IPPool, WorkloadEndpoint
from felix_client.calc.render.chains import IPIP_DEVICE, VXLAN_DEVICE
from felix_client.calc.state import FdbEntry, Neighbour, Route

_PRIORITY = {"wl": 0, "borrowed": 1, "block": 2}
VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN headers: the VXLAN MTU is the host's minus this
FALLBACK_HOST_MTU = 1460  # Felix's host MTU when no interface matches its MTU interface pattern
# Scan a block's addresses (rather than all workloads) when its affinity changes, up to this size.
_MAX_BLOCK_SCAN = 4096


def default_vtep_mac(node_name: str) -> str:
    """The VXLAN tunnel MAC of a node whose Node/host config names none, as Felix derives it
    for its own device and for remote VTEPs alike: 0x66 then the first five bytes of SHA-1 of
    the node name (docs/peers.md)."""
    digest = hashlib.sha1(node_name.encode()).digest()[:5]
    return ":".join(f"{b:02x}" for b in (0x66, *digest))


def _ip_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def _wep_ints(wep: WorkloadEndpoint) -> tuple[int, ...]:
    nets = wep.ipv4_nets
    if len(nets) == 1:  # the common case, without a generator
        return (_ip_int(nets[0].partition("/")[0]),)
    return tuple(_ip_int(net.partition("/")[0]) for net in nets)


def _net_ints(cidr: str) -> tuple[int, int]:
    """(network int, prefix length)."""
    addr, _, plen_s = cidr.partition("/")
    plen = int(plen_s) if plen_s else 32
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return _ip_int(addr) & mask, plen


@dataclass(frozen=True, slots=True)
class RouteChanges:
    added: dict[str, Route]
    removed: frozenset[str]
    neighbours_added: dict[str, Neighbour]
    neighbours_removed: frozenset[str]
    fdb_added: dict[str, FdbEntry]
    fdb_removed: frozenset[str]


class RouteResolver:
    """Maintains this node's routes from the cluster model (see module docstring).

    The engine stores each update in the ``ClusterModel`` first and then calls the matching
    ``on_*`` method with the old and new values.
    """

    def __init__(self, node_name: str, model: ClusterModel) -> None:
        self.node_name = node_name
        self.model = model
        self._source_routes: dict[tuple[str, str], tuple[Route, ...]] = {}
        self._by_dst: dict[str, dict[tuple[str, str], Route]] = {}
        self._effective: dict[str, Route] = {}
        self._before: dict[str, Route | None] = {}
        # Indexes.
        self._block_index: dict[tuple[int, int], str] = {}  # (net int, plen) → block CIDR
        self._block_plens: list[int] = []
        self._plen_counts: dict[int, int] = {}
        self._blocks_by_node: dict[str, set[str]] = {}
        # Remote workloads by node and by IP: needed only when a node or a block's affinity
        # changes, so they are built on first use rather than during the snapshot.
        self._wep_index_built = False
        self._remote_weps_by_node: dict[str, set[str]] = {}
        self._remote_wep_ips: dict[int, set[str]] = {}
        self._pools: list[tuple[int, int, IPPool]] = []
        # VTEPs.
        self._neigh: dict[str, Neighbour] = {}
        self._fdb: dict[str, FdbEntry] = {}
        self._vtep_by_node: dict[str, tuple[Neighbour, FdbEntry]] = {}
        self._neigh_claims: dict[str, dict[str, Neighbour]] = {}
        self._fdb_claims: dict[str, dict[str, FdbEntry]] = {}
        self._neigh_before: dict[str, Neighbour | None] = {}
        self._fdb_before: dict[str, FdbEntry | None] = {}
        # The MTU of routes through vxlan.calico (Felix: VXLANMTU, else the host MTU - 50).
        self.vxlan_mtu = FALLBACK_HOST_MTU - VXLAN_OVERHEAD

    def set_vxlan_mtu(self, mtu: int) -> None:
        if mtu != self.vxlan_mtu:
            self.vxlan_mtu = mtu
            self.recompute_all()

    # --- queries ---------------------------------------------------------------------------------

    def routes(self) -> dict[str, Route]:
        return dict(self._effective)

    def neighbours(self) -> dict[str, Neighbour]:
        return dict(self._neigh)

    def fdb(self) -> dict[str, FdbEntry]:
        return dict(self._fdb)

    def vtep_peer_ips(self) -> set[str]:
        """The addresses of the remote nodes with a VTEP: where VXLAN packets may come from
        and go to (Felix's all-vxlan-net set)."""
        return {fdb.dst for _, fdb in self._vtep_by_node.values()}

    # --- inputs ----------------------------------------------------------------------------------

    def on_wep(self, key: str, old: WorkloadEndpoint | None, new: WorkloadEndpoint | None) -> None:
        if self._wep_index_built:
            if old is not None and old.host != self.node_name:
                self._unindex_remote_wep(key, old, _wep_ints(old))
            if new is not None and new.host != self.node_name:
                ints = _wep_ints(new)
                self._index_remote_wep(key, new, ints)
                self._recompute_wep(key, new, ints)
                return
        self._recompute_wep(key, new)

    def on_block(self, cidr: str, old: Block | None, new: Block | None) -> None:
        if old is not None:
            self._block_index.pop(_net_ints(old.cidr), None)
            if old.affinity_host:
                self._blocks_by_node.get(old.affinity_host, set()).discard(cidr)
        if new is not None:
            self._block_index[_net_ints(new.cidr)] = cidr
            if new.affinity_host:
                self._blocks_by_node.setdefault(new.affinity_host, set()).add(cidr)
        if old is not None:
            self._count_plen(_net_ints(old.cidr)[1], -1)
        if new is not None:
            self._count_plen(_net_ints(new.cidr)[1], +1)
        self._recompute_block(cidr)
        if (
            old is None
            or new is None
            or old.affinity_host != new.affinity_host
            or old.cidr != new.cidr
        ):
            # Which workloads count as borrowed may have changed.
            for block in (old, new):
                if block is not None:
                    for key in self._remote_weps_in(block.cidr):
                        self._recompute_wep(key, self.model.weps.get(key))

    def _count_plen(self, plen: int, delta: int) -> None:
        count = self._plen_counts.get(plen, 0) + delta
        if count:
            self._plen_counts[plen] = count
        else:
            self._plen_counts.pop(plen, None)
        self._block_plens = sorted(self._plen_counts, reverse=True)

    def on_node(self, name: str) -> None:
        """A node's addresses or tunnel config changed (Node resource, bird_ip or host config)."""
        if name == self.node_name:
            self.recompute_all()
            return
        for cidr in list(self._blocks_by_node.get(name, ())):
            self._recompute_block(cidr)
        self._ensure_wep_index()
        for key in list(self._remote_weps_by_node.get(name, ())):
            self._recompute_wep(key, self.model.weps.get(key))
        self._recompute_vtep(name)

    def on_pools(self) -> None:
        self._pools = sorted(
            ((*_net_ints(p.cidr), p) for p in self.model.pools.values() if ":" not in p.cidr),
            key=lambda t: -t[1],
        )
        self.recompute_all()

    def recompute_all(self) -> None:
        for cidr in list(self.model.blocks):
            self._recompute_block(cidr)
        for key, wep in self.model.weps.items():
            self._recompute_wep(key, wep)
        nodes = set(self.model.nodes) | set(self._vtep_by_node) | set(self.model.host_config)
        for name in nodes:
            self._recompute_vtep(name)

    # --- indexes ---------------------------------------------------------------------------------

    def _ensure_wep_index(self) -> bool:
        """Build the remote-workload indexes if there is anything to index; False if empty."""
        if self._wep_index_built:
            return True
        if not self.model.weps:
            return False
        for key, wep in self.model.weps.items():
            if wep.host != self.node_name:
                self._index_remote_wep(key, wep, _wep_ints(wep))
        self._wep_index_built = True
        return True

    def _index_remote_wep(self, key: str, wep: WorkloadEndpoint, ints: tuple[int, ...]) -> None:
        by_node = self._remote_weps_by_node.get(wep.host)
        if by_node is None:
            self._remote_weps_by_node[wep.host] = {key}
        else:
            by_node.add(key)
        by_ip = self._remote_wep_ips
        for n in ints:
            keys = by_ip.get(n)
            if keys is None:
                by_ip[n] = {key}
            else:
                keys.add(key)

    def _unindex_remote_wep(self, key: str, wep: WorkloadEndpoint, ints: tuple[int, ...]) -> None:
        keys = self._remote_weps_by_node.get(wep.host)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._remote_weps_by_node[wep.host]
        for n in ints:
            keys = self._remote_wep_ips.get(n)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._remote_wep_ips[n]

    def _remote_weps_in(self, cidr: str) -> set[str]:
        if not self._ensure_wep_index():
            return set()
        net, plen = _net_ints(cidr)
        size = 1 << (32 - plen)
        out: set[str] = set()
        if size <= _MAX_BLOCK_SCAN:
            for n in range(net, net + size):
                keys = self._remote_wep_ips.get(n)
                if keys:
                    out |= keys
        else:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            for n, keys in self._remote_wep_ips.items():
                if n & mask == net:
                    out |= keys
        return out

    def _block_for(self, ip: int) -> str | None:
        for plen in self._block_plens:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            cidr = self._block_index.get((ip & mask, plen))
            if cidr is not None:
                return cidr
        return None

    def _pool_for(self, ip: int) -> IPPool | None:
        for net, plen, pool in self._pools:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            if ip & mask == net:
                return pool
        return None

    # --- route computation -----------------------------------------------------------------------

    def _node_ip(self, name: str) -> str | None:
        node = self.model.nodes.get(name)
        if node is not None and node.ipv4_address:
            return node.ipv4_address
        return self.model.host_ips.get(name)

    def _same_subnet(self, remote_ip: str) -> bool:
        me = self.model.nodes.get(self.node_name)
        if me is None or not me.ipv4_cidr:
            return False
        try:
            return ipaddress.IPv4Address(remote_ip) in ipaddress.IPv4Network(
                me.ipv4_cidr, strict=False
            )
        except ValueError:
            return False

    def vtep(self, name: str) -> tuple[str, str] | None:
        """(tunnel IP, MAC) of a node's VXLAN tunnel endpoint; host config wins over the Node,
        and a node without a MAC gets Felix's derived one."""
        cfg = self.model.host_config.get(name, {})
        node = self.model.nodes.get(name)
        ip = cfg.get("IPv4VXLANTunnelAddr") or (node.vxlan_tunnel_addr if node else None)
        if not ip:
            return None
        mac = cfg.get("VXLANTunnelMACAddr") or (node.vxlan_tunnel_mac if node else None)
        return ip, mac or default_vtep_mac(name)

    def _remote_route(self, dst: str, node_name: str, pool: IPPool | None) -> Route | None:
        node_ip = self._node_ip(node_name)
        if node_ip is None:
            return None
        same = self._same_subnet(node_ip)
        if pool is not None and _encapsulates(pool.ipip_mode, same):
            return Route(dst, via=node_ip, dev=IPIP_DEVICE, onlink=True)
        if pool is not None and _encapsulates(pool.vxlan_mode, same):
            vtep = self.vtep(node_name)
            if vtep is None:
                return None
            # As Felix: the tunnel's MTU, and the device-route protocol (boot, shown as none);
            # such routes are recognised by their device, not their protocol.
            return Route(
                dst, via=vtep[0], dev=VXLAN_DEVICE, onlink=True, proto=None, mtu=self.vxlan_mtu
            )
        if pool is not None and EncapMode.CROSS_SUBNET in (pool.ipip_mode, pool.vxlan_mode):
            # A CrossSubnet pool's node in our subnet: Felix's direct ("no-encap") route, onlink
            # through the interface that holds our own address (the backend finds it).
            return Route(dst, via=node_ip, onlink=True)
        return Route(dst, via=node_ip)

    def _recompute_block(self, cidr: str) -> None:
        block = self.model.blocks.get(cidr)
        routes: tuple[Route, ...] = ()
        if block is not None and block.affinity_host and ":" not in block.cidr:
            plen = _net_ints(block.cidr)[1]
            if block.affinity_host == self.node_name:
                if plen < 32:
                    routes = (Route(block.cidr, type="blackhole"),)
            else:
                route = self._remote_route(
                    block.cidr, block.affinity_host, self._pool_for(_net_ints(block.cidr)[0])
                )
                routes = (route,) if route is not None else ()
        self._set_source(("block", cidr), routes)

    def _recompute_wep(
        self, key: str, wep: WorkloadEndpoint | None, ints: tuple[int, ...] | None = None
    ) -> None:
        local: tuple[Route, ...] = ()
        borrowed: list[Route] = []
        if wep is not None and wep.host == self.node_name:
            if wep.iface:
                local = tuple(
                    Route(net, dev=wep.iface, scope_link=True, proto=None) for net in wep.ipv4_nets
                )
        elif wep is not None:
            if ints is None:
                ints = _wep_ints(wep)
            for net, n in zip(wep.ipv4_nets, ints, strict=True):
                ip = net.partition("/")[0]
                block_cidr = self._block_for(n)
                block = self.model.blocks.get(block_cidr) if block_cidr else None
                if block is not None and block.affinity_host == wep.host:
                    continue  # covered by the block route
                route = self._remote_route(f"{ip}/32", wep.host, self._pool_for(n))
                if route is not None:
                    borrowed.append(route)
        # Most workloads produce neither kind of route; skip the bookkeeping for them.
        if local or ("wl", key) in self._source_routes:
            self._set_source(("wl", key), local)
        if borrowed or ("borrowed", key) in self._source_routes:
            self._set_source(("borrowed", key), tuple(borrowed))

    def _recompute_vtep(self, name: str) -> None:
        entry = None
        vxlan = any(p.vxlan_mode is not EncapMode.NEVER for _, _, p in self._pools)
        if vxlan and name != self.node_name:
            vtep = self.vtep(name)
            node_ip = self._node_ip(name)
            if vtep is not None and node_ip is not None:
                entry = (
                    Neighbour(vtep[0], vtep[1], VXLAN_DEVICE),
                    FdbEntry(vtep[1], node_ip, VXLAN_DEVICE),
                )
        old = self._vtep_by_node.get(name)
        if old == entry:
            return
        if entry is None:
            del self._vtep_by_node[name]
        else:
            self._vtep_by_node[name] = entry
        # Two nodes claiming one VTEP IP or MAC is a misconfiguration; resolve it by node name so
        # the result does not depend on update order.
        for index, (claims, table, before) in enumerate(
            (
                (self._neigh_claims, self._neigh, self._neigh_before),
                (self._fdb_claims, self._fdb, self._fdb_before),
            )
        ):
            old_key = old[index].ip if index == 0 and old else (old[1].mac if old else None)
            new_key = entry[0].ip if index == 0 and entry else (entry[1].mac if entry else None)
            for key in {k for k in (old_key, new_key) if k is not None}:
                owners = claims.setdefault(key, {})
                owners.pop(name, None)
                if key == new_key and entry is not None:
                    owners[name] = entry[index]
                if not owners:
                    del claims[key]
                    self._touch(table, before, key, None)
                else:
                    self._touch(table, before, key, owners[min(owners)])

    @staticmethod
    def _touch(table: dict, before: dict, key: str, value: object) -> None:
        if key not in before:
            before[key] = table.get(key)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    def _set_source(self, source: tuple[str, str], routes: tuple[Route, ...]) -> None:
        old = self._source_routes.get(source, ())
        if old == routes:
            return
        if routes:
            self._source_routes[source] = routes
        else:
            self._source_routes.pop(source, None)
        dsts = set()
        for r in old:
            entries = self._by_dst.get(r.dst)
            if entries is not None:
                entries.pop(source, None)
                if not entries:
                    del self._by_dst[r.dst]
            dsts.add(r.dst)
        for r in routes:
            self._by_dst.setdefault(r.dst, {})[source] = r
            dsts.add(r.dst)
        for dst in dsts:
            self._resolve(dst)

    def _resolve(self, dst: str) -> None:
        entries = self._by_dst.get(dst)
        if entries:
            best = min(entries, key=lambda s: (_PRIORITY[s[0]], s[1]))
            route: Route | None = entries[best]
        else:
            route = None
        self._touch(self._effective, self._before, dst, route)

    # --- output ----------------------------------------------------------------------------------

    def take_changes(self) -> RouteChanges:
        added, removed = _diff(self._effective, self._before)
        n_added, n_removed = _diff(self._neigh, self._neigh_before)
        f_added, f_removed = _diff(self._fdb, self._fdb_before)
        self._before = {}
        self._neigh_before = {}
        self._fdb_before = {}
        return RouteChanges(added, removed, n_added, n_removed, f_added, f_removed)


def _encapsulates(mode: EncapMode, same_subnet: bool) -> bool:
    return mode is EncapMode.ALWAYS or (mode is EncapMode.CROSS_SUBNET and not same_subnet)


def _diff(current: dict, before: dict) -> tuple[dict, frozenset]:
    added = {}
    removed = set()
    for key, old in before.items():
        new = current.get(key)
        if new == old:
            continue
        if new is None:
            removed.add(key)
        else:
            added[key] = new
    return added, frozenset(removed)


def routes_diff(
    old: dict[str, Route], new: dict[str, Route]
) -> tuple[dict[str, Route], frozenset[str]]:
    """(added-or-replaced, removed dsts) between two route tables."""
    added = {d: r for d, r in new.items() if old.get(d) != r}
    removed = frozenset(d for d in old if d not in new)
    return added, removed
