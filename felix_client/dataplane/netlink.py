"""Routes, VXLAN neighbours/FDB entries and the ``vxlan.calico`` device, over netlink (pyroute2).

Everything here is synchronous and blocking: the kernel backend calls it through
``trio.to_thread.run_sync`` with a capacity limiter of one, so one ``IPRoute`` socket is only
ever used by one thread at a time.

What is ours (and may therefore be replaced or deleted):

* routes in the main table with protocol 80 (Felix's ``DefaultRouteProto``): block blackholes,
  routes to remote blocks and borrowed /32s (direct or through ``tunl0``);
* routes through ``vxlan.calico``, which Felix programs with the device-route protocol (``boot``)
  and the VXLAN MTU, and recognises by their device;
* /32 routes whose output interface is a workload interface (``cali*``), which Felix programs
  with the device-route protocol (``boot``, 3);
* permanent neighbour and FDB entries on ``vxlan.calico``, and that device itself.

A route whose interface does not exist yet, or is down (the CNI has not finished creating the
workload's veth), or whose gateway is not on a connected subnet, is *pending*, not an error: it is
kept and retried.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from felix_client.calc.render.chains import VXLAN_DEVICE
from felix_client.calc.routes import VXLAN_OVERHEAD
from felix_client.calc.state import FdbEntry, Neighbour, Route
from felix_client.dataplane.base import DataplaneError, VxlanDevice

MAIN_TABLE = 254
RTPROT_KERNEL = 2
RTPROT_BOOT = 3  # what ``ip route`` shows as no protocol; Felix's default DeviceRouteProtocol
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
NTF_SELF = 2
NUD_PERMANENT = 0x80
WORKLOAD_PREFIX = "cali"

# Errors that mean "not programmable yet", retried later rather than failing the apply: the
# interface is not there or not up yet, or the gateway of an unencapsulated route is not
# directly reachable (a remote block in another subnet without encapsulation: BGP's job).
_NOT_YET = {errno.ENODEV, errno.ENETDOWN, errno.ENETUNREACH}
_GONE = {errno.ESRCH, errno.ENOENT, errno.ENODEV}
# Felix's default MTUIfacePattern: the host interfaces whose smallest MTU is the host MTU.
MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A main-table IPv4 route as read back from the kernel, normalised for comparison."""

    dst: str
    type: int
    proto: int
    scope: int
    gateway: str | None
    oif: str | None
    onlink: bool
    mtu: int | None = None


def route_key(route: Route) -> KernelRoute:
    """How ``route`` looks when read back from the kernel."""
    blackhole = route.type == "blackhole"
    return KernelRoute(
        dst=route.dst if "/" in route.dst else f"{route.dst}/32",
        type=RTN_BLACKHOLE if blackhole else RTN_UNICAST,
        proto=RTPROT_BOOT if route.proto is None else route.proto,
        scope=RT_SCOPE_LINK if (route.scope_link or (route.dev and not route.via)) else 0,
        gateway=route.via,
        oif=None if blackhole else route.dev,
        onlink=route.onlink,
        mtu=route.mtu,
    )


def is_ours(kr: KernelRoute) -> bool:
    if kr.proto == 80:
        return True
    if kr.oif == VXLAN_DEVICE and kr.proto != RTPROT_KERNEL:
        return True
    return (
        kr.dst.endswith("/32")
        and kr.oif is not None
        and kr.oif.startswith(WORKLOAD_PREFIX)
        and kr.proto != RTPROT_KERNEL
    )


@dataclass
class NetlinkResult:
    """What a route pass left to do later, and which workload interfaces got their first route
    (they need Felix's per-interface sysctls)."""

    pending: list[Route | Neighbour | FdbEntry] = field(default_factory=list)
    new_ifaces: list[str] = field(default_factory=list)
    calls: int = 0


class NetlinkRoutes:
    """Route/neighbour/FDB/device programming in one network namespace (``None``: our own)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._ipr: Any = None
        self.programmed: dict[str, Route] = {}  # dst → what we last wrote successfully
        self._iface_index: dict[str, int] = {}  # workload ifaces configured, by ifindex seen

    # --- plumbing --------------------------------------------------------------------------------

    def _ip(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    def links(self) -> dict[str, int]:
        return {
            link.get("IFLA_IFNAME"): link["index"]
            for link in self._ip().get_links()
            if link.get("IFLA_IFNAME")
        }

    def _call(self, result: NetlinkResult, method: str, *args: Any, **kwargs: Any) -> Any:
        result.calls += 1
        return getattr(self._ip(), method)(*args, **kwargs)

    # --- routes ----------------------------------------------------------------------------------

    def _route_kwargs(self, route: Route, links: Mapping[str, int]) -> dict[str, Any] | None:
        """pyroute2 arguments for ``route``; ``None`` if its interface does not exist yet."""
        key = route_key(route)
        kwargs: dict[str, Any] = {
            "dst": key.dst,
            "table": MAIN_TABLE,
            "proto": key.proto,
            "type": "blackhole" if key.type == RTN_BLACKHOLE else "unicast",
        }
        if key.scope:
            kwargs["scope"] = key.scope
        if route.via:
            kwargs["gateway"] = route.via
        if route.onlink:
            kwargs["flags"] = RTNH_F_ONLINK
        if route.mtu is not None:
            kwargs["metrics"] = {"mtu": route.mtu}
        if route.dev and key.type != RTN_BLACKHOLE:
            index = links.get(route.dev)
            if index is None:
                return None
            kwargs["oif"] = index
        elif route.onlink and route.via:
            # An onlink gateway needs its device: the one the kernel reaches the gateway through
            # (for a node in our subnet, the interface holding our own address).  Raises
            # ENETUNREACH (retried later) while there is none.
            kwargs["oif"] = self._ip().route("get", dst=route.via)[0].get("RTA_OIF")
        return kwargs

    def _replace_route(self, route: Route, links: Mapping[str, int], out: NetlinkResult) -> None:
        kwargs = self._route_kwargs(route, links)
        if kwargs is None:
            out.pending.append(route)
            return
        try:
            self._call(out, "route", "replace", **kwargs)
        except _netlink_error() as exc:
            if exc.code in _NOT_YET:
                out.pending.append(route)
                return
            raise DataplaneError(f"route replace {route.render()}: {exc}") from exc
        self.programmed[route.dst] = route
        self._note_iface(route, links, out)

    def _note_iface(self, route: Route, links: Mapping[str, int], out: NetlinkResult) -> None:
        """Report a workload interface the first time we route to it (or to a new incarnation
        of it: a recreated veth has a new ifindex and lost its sysctls)."""
        dev = route.dev
        if dev and dev.startswith(WORKLOAD_PREFIX) and self._iface_index.get(dev) != links[dev]:
            self._iface_index[dev] = links[dev]
            out.new_ifaces.append(dev)

    def _delete_route(self, kr: KernelRoute, links: Mapping[str, int], out: NetlinkResult) -> None:
        kwargs: dict[str, Any] = {
            "dst": kr.dst,
            "table": MAIN_TABLE,
            "proto": kr.proto,
            "type": "blackhole" if kr.type == RTN_BLACKHOLE else "unicast",
            # The kernel matches the scope on delete (pyroute2 would send universe).
            "scope": kr.scope,
        }
        if kr.oif is not None and kr.oif in links:
            kwargs["oif"] = links[kr.oif]
        if kr.gateway:
            kwargs["gateway"] = kr.gateway
        try:
            self._call(out, "route", "del", **kwargs)
        except _netlink_error() as exc:
            if exc.code not in _GONE:
                raise DataplaneError(f"route del {kr.dst}: {exc}") from exc

    def dump_routes(self, links: Mapping[str, int]) -> list[KernelRoute]:
        names = {index: name for name, index in links.items()}
        out = []
        for msg in self._ip().get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if msg.get("RTA_TABLE", msg["table"]) != MAIN_TABLE:
                continue
            dst = msg.get("RTA_DST") or "0.0.0.0"
            oif = msg.get("RTA_OIF")
            out.append(
                KernelRoute(
                    dst=f"{dst}/{msg['dst_len']}",
                    type=msg["type"],
                    proto=msg["proto"],
                    scope=msg["scope"],
                    gateway=msg.get("RTA_GATEWAY"),
                    oif=names.get(oif) if oif is not None else None,
                    onlink=bool(msg["flags"] & RTNH_F_ONLINK),
                    mtu=_route_mtu(msg),
                )
            )
        return out

    # --- neighbours and FDB ----------------------------------------------------------------------

    def _replace_neigh(self, n: Neighbour, links: Mapping[str, int], out: NetlinkResult) -> None:
        index = links.get(n.dev)
        if index is None:
            out.pending.append(n)
            return
        try:
            self._call(
                out, "neigh", "replace", dst=n.ip, lladdr=n.mac, ifindex=index, state="permanent"
            )
        except _netlink_error() as exc:
            if exc.code in _NOT_YET:
                out.pending.append(n)
                return
            raise DataplaneError(f"neigh replace {n.render()}: {exc}") from exc

    def _replace_fdb(self, f: FdbEntry, links: Mapping[str, int], out: NetlinkResult) -> None:
        index = links.get(f.dev)
        if index is None:
            out.pending.append(f)
            return
        try:
            self._call(
                out,
                "fdb",
                "replace",
                ifindex=index,
                lladdr=f.mac,
                dst=f.dst,
                flags=NTF_SELF,
                state="permanent",
            )
        except _netlink_error() as exc:
            if exc.code in _NOT_YET:
                out.pending.append(f)
                return
            raise DataplaneError(f"fdb replace {f.render()}: {exc}") from exc

    def _delete_neigh(self, ip: str, index: int, out: NetlinkResult) -> None:
        try:
            self._call(out, "neigh", "del", dst=ip, ifindex=index)
        except _netlink_error() as exc:
            if exc.code not in _GONE:
                raise DataplaneError(f"neigh del {ip}: {exc}") from exc

    def _delete_fdb(self, mac: str, dst: str | None, index: int, out: NetlinkResult) -> None:
        kwargs: dict[str, Any] = {"ifindex": index, "lladdr": mac, "flags": NTF_SELF}
        if dst:
            kwargs["dst"] = dst
        try:
            self._call(out, "fdb", "del", **kwargs)
        except _netlink_error() as exc:
            if exc.code not in _GONE:
                raise DataplaneError(f"fdb del {mac}: {exc}") from exc

    # --- incremental -----------------------------------------------------------------------------

    def apply(
        self,
        routes_removed: Iterable[str],
        routes_added: Iterable[Route],
        neighbours_removed: Iterable[Neighbour],
        neighbours_added: Iterable[Neighbour],
        fdb_removed: Iterable[FdbEntry],
        fdb_added: Iterable[FdbEntry],
    ) -> NetlinkResult:
        """Removals first (so a replaced VTEP never coexists with its successor), then adds.

        Removed neighbours/FDB entries are passed as the objects previously programmed (the
        backend remembers them) so that deletion can name them exactly.
        """
        out = NetlinkResult()
        links = self.links()
        for dst in routes_removed:
            old = self.programmed.pop(dst, None)
            if old is not None:
                self._delete_route(route_key(old), links, out)
        for n in neighbours_removed:
            if n.dev in links:
                self._delete_neigh(n.ip, links[n.dev], out)
        for f in fdb_removed:
            if f.dev in links:
                self._delete_fdb(f.mac, f.dst, links[f.dev], out)
        for n in neighbours_added:
            self._replace_neigh(n, links, out)
        for f in fdb_added:
            self._replace_fdb(f, links, out)
        for route in routes_added:
            self._replace_route(route, links, out)
        return out

    def retry(self, items: Iterable[Route | Neighbour | FdbEntry]) -> NetlinkResult:
        out = NetlinkResult()
        links = self.links()
        for item in items:
            if isinstance(item, Route):
                self._replace_route(item, links, out)
            elif isinstance(item, Neighbour):
                self._replace_neigh(item, links, out)
            else:
                self._replace_fdb(item, links, out)
        return out

    # --- full resync -----------------------------------------------------------------------------

    def resync(
        self,
        routes: Mapping[str, Route],
        neighbours: Mapping[str, Neighbour],
        fdb: Mapping[str, FdbEntry],
        vxlan_name: str,
    ) -> NetlinkResult:
        """Make our routes, neighbours and FDB entries exactly ``routes``/``neighbours``/``fdb``.

        Interfaces are re-read, so workload interfaces recreated since the last pass get their
        sysctls again.
        """
        out = NetlinkResult()
        links = self.links()
        self._iface_index = {n: i for n, i in self._iface_index.items() if links.get(n) == i}
        wanted = {route_key(r).dst: (route_key(r), r) for r in routes.values()}
        present: dict[str, list[KernelRoute]] = {}
        for kr in self.dump_routes(links):
            if is_ours(kr):
                present.setdefault(kr.dst, []).append(kr)
        self.programmed = {}
        for dst, krs in present.items():
            if dst not in wanted:
                for kr in krs:
                    self._delete_route(kr, links, out)
            # A wanted dst with different attributes is overwritten in place by the replace
            # below, so traffic never sees a gap.
        # Neighbours and FDB entries on the VXLAN device.
        index = links.get(vxlan_name)
        if index is not None:
            want_neigh = {n.ip: n.mac.lower() for n in neighbours.values()}
            for msg in self._ip().get_neighbours(ifindex=index, family=socket.AF_INET):
                ip, mac = msg.get("NDA_DST"), (msg.get("NDA_LLADDR") or "").lower()
                if msg["state"] & NUD_PERMANENT and want_neigh.get(ip) != mac:
                    self._delete_neigh(ip, index, out)
            want_fdb = {f.mac.lower(): f.dst for f in fdb.values()}
            for msg in self._ip().fdb("dump", ifindex=index):
                mac, dst = (msg.get("NDA_LLADDR") or "").lower(), msg.get("NDA_DST")
                if msg["ifindex"] != index or not dst:
                    continue
                if want_fdb.get(mac) != dst:
                    self._delete_fdb(mac, dst, index, out)
        for n in neighbours.values():
            self._replace_neigh(n, links, out)
        for f in fdb.values():
            self._replace_fdb(f, links, out)
        for dst, (key, route) in wanted.items():
            if any(_same(kr, key) for kr in present.get(dst, ())):
                self.programmed[route.dst] = route  # already right: no write needed
                self._note_iface(route, links, out)
                continue
            self._replace_route(route, links, out)
        return out

    # --- the VXLAN device ------------------------------------------------------------------------

    def ensure_vxlan(self, device: VxlanDevice | None, name: str) -> tuple[int, bool]:
        """Create, fix or (``device is None``) delete the VXLAN device; returns (netlink calls,
        whether the device was created: the kernel keeps no route, neighbour or FDB entry of a
        device it deleted, so a new device starts without any)."""
        out = NetlinkResult()
        created = False
        ipr = self._ip()
        Err = _netlink_error()
        try:
            existing = ipr.link("get", ifname=name)[0]
        except Err as exc:
            if exc.code not in _GONE:
                raise DataplaneError(f"link get {name}: {exc}") from exc
            existing = None
        if device is None:
            if existing is not None:
                self._call(out, "link", "del", index=existing["index"])
            return out.calls, created
        if existing is not None and not _vxlan_matches(existing, device):
            self._call(out, "link", "del", index=existing["index"])
            existing = None
        try:
            if existing is None:
                kwargs: dict[str, Any] = {
                    "ifname": name,
                    "kind": "vxlan",
                    "vxlan_id": device.vni,
                    "vxlan_port": device.port,
                    "vxlan_local": device.local_ip,
                    "vxlan_learning": 0,
                    "address": device.mac,
                }
                parent = self._parent_of(device.local_ip)
                if parent is not None:
                    kwargs["vxlan_link"] = parent[0]
                    kwargs["mtu"] = device.mtu or parent[1] - VXLAN_OVERHEAD
                self._call(out, "link", "add", **kwargs)
                created = True
                existing = ipr.link("get", ifname=name)[0]
            index = existing["index"]
            if device.mtu and existing.get("IFLA_MTU") != device.mtu:
                self._call(out, "link", "set", index=index, mtu=device.mtu)
            if (existing.get("IFLA_ADDRESS") or "").lower() != device.mac:
                self._call(out, "link", "set", index=index, address=device.mac)
            if not existing["flags"] & 1:  # IFF_UP
                self._call(out, "link", "set", index=index, state="up")
            addrs = {
                (a.get("IFA_ADDRESS"), a["prefixlen"])
                for a in ipr.get_addr(index=index, family=socket.AF_INET)
            }
            for addr, plen in addrs - {(device.tunnel_ip, 32)}:
                self._call(out, "addr", "del", index=index, address=addr, prefixlen=plen)
            if (device.tunnel_ip, 32) not in addrs:
                self._call(out, "addr", "add", index=index, address=device.tunnel_ip, prefixlen=32)
        except Err as exc:
            raise DataplaneError(f"vxlan device {name}: {exc}") from exc
        return out.calls, created

    def _parent_of(self, ip: str) -> tuple[int, int] | None:
        """(ifindex, MTU) of the interface holding ``ip``."""
        ipr = self._ip()
        for a in ipr.get_addr(family=socket.AF_INET):
            if a.get("IFA_ADDRESS") == ip:
                link = ipr.link("get", index=a["index"])[0]
                return a["index"], link.get("IFLA_MTU") or 1500
        return None

    def host_mtu(self, pattern: str = MTU_IFACE_PATTERN) -> int | None:
        """The smallest MTU of the up interfaces whose name matches ``pattern`` (Felix's host
        MTU detection); ``None`` if none matches."""
        regex = re.compile(pattern)
        mtus = [
            link.get("IFLA_MTU")
            for link in self._ip().get_links()
            if regex.match(link.get("IFLA_IFNAME") or "")
            and (
                link.get("IFLA_OPERSTATE") == "UP"
                or (link.get("IFLA_OPERSTATE") == "UNKNOWN" and link["flags"] & 1)
            )
            and link.get("IFLA_MTU")
        ]
        return min(mtus) if mtus else None


def _route_mtu(msg: Any) -> int | None:
    metrics = msg.get("RTA_METRICS")
    return metrics.get("RTAX_MTU") if metrics is not None else None


def _same(kernel: KernelRoute, wanted: KernelRoute) -> bool:
    """Does the kernel's route already say what we want? A route given only a gateway comes
    back with the interface the kernel resolved it to, which we did not ask for."""
    if wanted.oif is None and kernel.oif is not None:
        kernel = replace(kernel, oif=None)
    return kernel == wanted


def _vxlan_matches(link: Any, device: VxlanDevice) -> bool:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    if data is None:
        return False
    return (
        data.get("IFLA_VXLAN_ID") == device.vni
        and data.get("IFLA_VXLAN_PORT") == device.port
        and data.get("IFLA_VXLAN_LOCAL") == device.local_ip
    )
