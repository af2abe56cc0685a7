"""The narrow waist between the calculation and the kernel: what a dataplane backend must do.

A backend receives the engine's output — a ``DataplaneDelta`` plus the full ``DataplaneState`` it
leads to — and makes the node match it. Two calls, with different promises:

* ``apply(delta, state, host)``: program only what the delta names, in the order documented in
  ``felix_client.calc.state`` (sets before the chains that use them, chains before the sets they
  stop using are destroyed, routes last). Cheap; assumes the node matched the previous state.
* ``resync(state, host)``: read what is in the node, and rewrite everything of ours that differs
  from ``state`` (and delete what is ours but unwanted). Used for the first apply, after any
  failed apply (a failed apply leaves the node at an unknown point between two states), and
  periodically to repair drift.

Both raise ``DataplaneError`` when the node could not be brought to the requested state. Things
that cannot be programmed *yet* — a route to a workload interface that the CNI has not created —
are not errors: the backend remembers them, ``pending_work()`` says so, and ``retry_pending()``
tries again.

``HostSpec`` carries node-level objects that are not part of ``DataplaneState`` (today only the
``vxlan.calico`` device); ``host_spec()`` derives it from the engine's cluster model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.objects import EncapMode
from felix_client.calc.render.chains import VXLAN_DEVICE, VXLAN_PORT
from felix_client.calc.routes import default_vtep_mac
from felix_client.calc.state import DataplaneDelta, DataplaneState

VXLAN_VNI = 4096  # Felix's default VXLANVNI


class DataplaneError(Exception):
    """The node could not be brought to the requested state (the caller should resync)."""


@dataclass(frozen=True, slots=True)
class VxlanDevice:
    """The ``vxlan.calico`` device Felix creates when any IPv4 pool uses VXLAN."""

    local_ip: str  # this node's IPv4 address: the outer source of encapsulated packets
    tunnel_ip: str  # IPv4VXLANTunnelAddr, assigned as a /32 to the device
    mac: str  # VXLANTunnelMACAddr
    mtu: int | None = None  # the VXLAN MTU (None: the parent interface's MTU - 50)
    name: str = VXLAN_DEVICE
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT

    def render(self) -> str:
        return (
            f"{self.name} vxlan id {self.vni} dstport {self.port} local {self.local_ip} "
            f"address {self.mac} inet {self.tunnel_ip}/32 nolearning"
        )


@dataclass(frozen=True, slots=True)
class HostSpec:
    """Node-level objects the backend owns besides ``DataplaneState``."""

    vxlan: VxlanDevice | None = None


NO_HOST = HostSpec()  # the default: no tunnel device


def host_spec(model: ClusterModel, node: str, vxlan_mtu: int | None = None) -> HostSpec:
    """What this node needs: a VXLAN device when some IPv4 pool uses VXLAN and the node has
    a VTEP address (host config wins over the Node resource, as in the route resolver; without a
    MAC, Felix's derived one), with MTU ``vxlan_mtu`` (the engine's ``vxlan_mtu``)."""
    vxlan_pools = any(
        p.vxlan_mode is not EncapMode.NEVER for p in model.pools.values() if ":" not in p.cidr
    )
    if not vxlan_pools:
        return HostSpec()
    info = model.nodes.get(node)
    cfg = model.host_config.get(node, {})
    local_ip = (info.ipv4_address if info is not None else None) or model.host_ips.get(node)
    tunnel_ip = cfg.get("IPv4VXLANTunnelAddr") or (info.vxlan_tunnel_addr if info else None)
    mac = cfg.get("VXLANTunnelMACAddr") or (info.vxlan_tunnel_mac if info else None)
    if not (local_ip and tunnel_ip):
        return HostSpec()
    mac = mac or default_vtep_mac(node)
    return HostSpec(
        VxlanDevice(local_ip=local_ip, tunnel_ip=tunnel_ip, mac=mac.lower(), mtu=vxlan_mtu)
    )


@dataclass
class DataplaneStats:
    """Plain counters a backend keeps; ``felix_client.metrics`` exports them at scrape time
    (Felix's ``felix_ipset_*`` / ``felix_iptables_*`` families)."""

    ipset_calls: int = 0
    ipset_errors: int = 0
    ipset_lines_executed: int = 0
    iptables_restore_calls: int = 0
    iptables_restore_errors: int = 0
    iptables_save_calls: int = 0
    iptables_save_errors: int = 0
    iptables_lines_executed: dict[str, int] = field(default_factory=lambda: {"filter": 0, "nat": 0})
    route_calls: int = 0
    route_errors: int = 0
    routes_pending: int = 0
    exec_calls: int = 0
    exec_seconds: float = 0.0


class Dataplane(Protocol):
    """The calls the agent makes on a backend (see the module docstring)."""

    stats: DataplaneStats

    async def apply(
        self, delta: DataplaneDelta, state: DataplaneState, host: HostSpec = NO_HOST
    ) -> None: ...

    async def resync(self, state: DataplaneState, host: HostSpec = NO_HOST) -> None: ...

    def pending_work(self) -> bool: ...

    async def host_mtu(self) -> int | None:
        """The node's host MTU as Felix detects it (``None``: nothing to detect it from)."""
        ...

    async def retry_pending(self) -> None: ...

    async def aclose(self) -> None: ...
