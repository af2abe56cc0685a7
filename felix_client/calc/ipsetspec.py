"""IP set identities: IDs, kernel names and types (docs/felix-calc.md, "Naming rules").

Selector sets are named ``cali40s:<hash>`` (hash:net, CIDR members). Named-port sets are named
``cali40n:<hash>`` (hash:ip,port, members ``ip,proto:port``). Names are truncated to 31 characters
(the kernel limit) exactly as Felix does, so they are interchangeable with Felix's.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from felix_client.calc.selector import Selector

IPSET_NAME_MAX = 31
IPV4_PREFIX = "cali40"
TYPE_NET = "hash:net"
TYPE_IP_PORT = "hash:ip,port"

# Fixed set IDs.
MASQ_POOLS_ID = "masq-ipam-pools"
NETWORK_POOLS_ID = "network-ip-pools"  # Felix's name (IPSetIDNetworkPools)
ALL_HOSTS_ID = "all-hosts-net"  # every node's address: IPIP peers (Felix: only with IPIP)
ALL_VXLAN_ID = "all-vxlan-net"  # remote nodes with a VTEP: VXLAN peers (Felix: only with VXLAN)


def ipset_name(set_id: str) -> str:
    """Kernel name of the IPv4 set with ID ``set_id``."""
    return (IPV4_PREFIX + set_id)[:IPSET_NAME_MAX]


def named_port_set_id(selector_uid: str, protocol: str, port_name: str) -> str:
    digest = hashlib.sha224(f"n:{selector_uid},{protocol},{port_name}".encode()).digest()
    return "n:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """A set the rules need. ``protocol``/``port_name`` are set only for named-port sets
    (``protocol`` is ``tcp``, ``udp``, ``sctp`` or ``any``)."""

    set_id: str
    selector: Selector
    protocol: str = ""
    port_name: str = ""

    @property
    def is_named_port(self) -> bool:
        return bool(self.port_name)

    @property
    def name(self) -> str:
        return ipset_name(self.set_id)

    @property
    def ipset_type(self) -> str:
        return TYPE_IP_PORT if self.port_name else TYPE_NET


def selector_set(selector: Selector) -> IPSetSpec:
    return IPSetSpec(selector.uid, selector)


def named_port_set(selector: Selector, protocol: str, port_name: str) -> IPSetSpec:
    return IPSetSpec(
        named_port_set_id(selector.uid, protocol, port_name), selector, protocol, port_name
    )
