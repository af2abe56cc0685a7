"""v3 Node → host config keys, wireguard and the passthrough resource.

Outputs, in this order, only those that are set:

* ``HostConfigKey``s ``IpInIpTunnelAddr`` (spec.bgp.ipv4IPIPTunnelAddr), ``IPv4VXLANTunnelAddr``,
  ``VXLANTunnelMACAddr``, ``IPv6VXLANTunnelAddr``, ``VXLANTunnelMACAddrV6`` — string values;
* ``WireguardKey`` — when any wireguard address or public key is set, value
  ``{"interfaceIPv4Addr", "publicKey", "interfaceIPv6Addr", "publicKeyV6"}`` (unset → ``""``);
* ``ResourceKey`` ``nodes/<name>`` — the whole v3 object (canonical, server metadata removed).

No ``HostMetadataKey`` (``/calico/v1/host/<node>/metadata``): Calico Typha's syncers never send
one; clients learn of nodes from the ``nodes`` resource.

Keys that a Node stops producing are deleted by the caller's ``ResourceExpander``.
"""

from __future__ import annotations

from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    as_dict,
    as_list,
    normalize_ip,
    normalize_mac,
    opt_int,
    opt_str,
    parse_interface,
    passthrough_object,
    resource_name,
    spec,
)
from typha.sync.convert.errors import InvalidResource


def _validate(s: dict[str, Any], status: dict[str, Any]) -> None:
    bgp = as_dict(s.get("bgp"), "spec.bgp")
    for f in ("ipv4Address", "ipv6Address"):
        if bgp.get(f):
            parse_interface(bgp[f], f"spec.bgp.{f}")
    asn = bgp.get("asNumber")
    if isinstance(asn, str) and asn.isdigit():
        asn = int(asn)
    if opt_int(asn, "spec.bgp.asNumber") is not None and not 0 < asn < 2**32:
        raise InvalidResource("must be in 1-4294967295", field="spec.bgp.asNumber")
    for i, addr in enumerate(as_list(s.get("addresses"), "spec.addresses")):
        parse_interface(
            as_dict(addr, f"spec.addresses[{i}]").get("address"), f"spec.addresses[{i}].address"
        )
    as_list(status.get("podCIDRs"), "status.podCIDRs")


def node_updates(resource: dict[str, Any]) -> list[Update]:
    name = resource_name(resource)
    s = spec(resource)
    status = as_dict(resource.get("status"), "status")
    _validate(s, status)
    bgp = as_dict(s.get("bgp"), "spec.bgp")
    out: list[Update] = []
    tunnel_fields = (
        (
            "IpInIpTunnelAddr",
            bgp.get("ipv4IPIPTunnelAddr"),
            "spec.bgp.ipv4IPIPTunnelAddr",
            normalize_ip,
        ),
        (
            "IPv4VXLANTunnelAddr",
            s.get("ipv4VXLANTunnelAddr"),
            "spec.ipv4VXLANTunnelAddr",
            normalize_ip,
        ),
        (
            "VXLANTunnelMACAddr",
            s.get("vxlanTunnelMACAddr"),
            "spec.vxlanTunnelMACAddr",
            normalize_mac,
        ),
        (
            "IPv6VXLANTunnelAddr",
            s.get("ipv6VXLANTunnelAddr"),
            "spec.ipv6VXLANTunnelAddr",
            normalize_ip,
        ),
        (
            "VXLANTunnelMACAddrV6",
            s.get("vxlanTunnelMACAddrV6"),
            "spec.vxlanTunnelMACAddrV6",
            normalize_mac,
        ),
    )
    for config_name, raw, field, normalize in tunnel_fields:
        if opt_str(raw, field):
            out.append(Update(keys.host_config_key(name, config_name), normalize(raw, field)))

    wg = as_dict(s.get("wireguard"), "spec.wireguard")
    wg_value = {
        "interfaceIPv4Addr": opt_str(
            wg.get("interfaceIPv4Address"), "spec.wireguard.interfaceIPv4Address"
        ),
        "publicKey": opt_str(status.get("wireguardPublicKey"), "status.wireguardPublicKey"),
        "interfaceIPv6Addr": opt_str(
            wg.get("interfaceIPv6Address"), "spec.wireguard.interfaceIPv6Address"
        ),
        "publicKeyV6": opt_str(status.get("wireguardPublicKeyV6"), "status.wireguardPublicKeyV6"),
    }
    for f, field in (
        ("interfaceIPv4Addr", "interfaceIPv4Address"),
        ("interfaceIPv6Addr", "interfaceIPv6Address"),
    ):
        if wg_value[f]:
            wg_value[f] = normalize_ip(wg_value[f], f"spec.wireguard.{field}")
    if any(wg_value.values()):
        out.append(Update(keys.wireguard_key(name), wg_value))

    out.append(Update(keys.resource_key("nodes", name), passthrough_object(resource, "Node")))
    return out
