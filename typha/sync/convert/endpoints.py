"""WorkloadEndpoints and HostEndpoints → model keys, and the WEP naming scheme.

WorkloadEndpoint value (every key always present, in this order)::

    {"state": "active", "name": <host-side interface>, "active_instance_id": "",
     "mac": str | None, "profile_ids": [str], "ipv4_nets": [CIDR /32] | None,
     "ipv6_nets": [CIDR /128] | None,
     "ipv4_nat": [{"int_ip", "ext_ip"}], "ipv6_nat": [...], "labels": {str: str},
     "ipv4_gateway": str | None, "ipv6_gateway": str | None,
     "ports": [{"name", "protocol", "port"}], "generate_name": str,
     "allow_spoofed_source_ips": [CIDR], "annotations": {str: str}}

HostEndpoint value::

    {"name": <interface or "">, "expected_ipv4_addrs": [ip], "expected_ipv6_addrs": [ip],
     "labels": {str: str}, "profile_ids": [str], "ports": [{"name", "protocol", "port"}]}
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    K8S_ORCHESTRATOR,
    NAMESPACE_LABEL,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    as_dict,
    as_list,
    checked_str_map,
    ip_version_of,
    metadata,
    normalize_cidr,
    normalize_ip,
    normalize_mac,
    opt_int,
    opt_str,
    parse_network,
    req_str,
    resource_name,
    resource_namespace,
    spec,
    str_list,
    str_map,
    strip_reserved_labels,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.rules import normalize_protocol

DEFAULT_INTERFACE_PREFIX = "cali"


# --- naming ---------------------------------------------------------------------------------------


def escape_name_part(part: str) -> str:
    """Inside a WEP name each part has ``-`` doubled, so that single dashes separate parts."""
    return part.replace("-", "--")


def workload_endpoint_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """``<node>-<orch>-<workload>-<endpoint>`` with each part escaped (k8s: workload = pod)."""
    return "-".join(escape_name_part(p) for p in (node, orchestrator, workload, endpoint))


def split_workload_endpoint_name(name: str) -> tuple[str, str, str, str]:
    """Invert ``workload_endpoint_name``: ``--`` is a literal dash, ``-`` a separator.

    Raises InvalidResource unless the name has exactly four non-empty parts.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == "-":
            if name.startswith("--", i):
                current.append("-")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(name[i])
        i += 1
    parts.append("".join(current))
    if len(parts) != 4 or not all(parts):
        raise InvalidResource(
            f"{name!r} is not <node>-<orchestrator>-<workload>-<endpoint> "
            "(with '-' inside a part written '--')",
            field="metadata.name",
        )
    return parts[0], parts[1], parts[2], parts[3]


def k8s_interface_name(namespace: str, pod: str, prefix: str = DEFAULT_INTERFACE_PREFIX) -> str:
    """Host-side veth name: prefix + first 11 hex digits of SHA-1("<ns>.<pod>")."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return prefix + digest[:11]


# --- WorkloadEndpoint -----------------------------------------------------------------------------


def _named_ports(value: object, field: str) -> list[dict[str, Any]]:
    """Endpoint ports → ``[{name, protocol, port}]``, keeping only named ports (the only ones
    Felix uses: named-port ipsets)."""
    out = []
    for i, p in enumerate(as_list(value, field)):
        pfield = f"{field}[{i}]"
        p = as_dict(p, pfield)
        name = opt_str(p.get("name"), f"{pfield}.name")
        port = opt_int(p.get("port"), f"{pfield}.port")
        if port is None or not 0 <= port <= 65535:
            raise InvalidResource("port must be an integer in 0-65535", field=f"{pfield}.port")
        protocol = normalize_protocol(p.get("protocol") or "TCP", f"{pfield}.protocol")
        if not name:
            continue
        out.append({"name": name, "protocol": protocol, "port": port})
    return out


# An IPv4 host network already in canonical form ("10.1.2.3/32": decimal octets without leading
# zeros): what nearly every workload endpoint carries. It is its own canonical string, so the
# `ipaddress` round trip (most of a listed endpoint's conversion time) can be skipped.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_CANONICAL_V4_HOST = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}/32")


def _workload_nets(value: object, field: str) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for i, net in enumerate(as_list(value, field)):
        if type(net) is str and _CANONICAL_V4_HOST.fullmatch(net):
            v4.append(net)
            continue
        # strict: "10.0.0.5/24" would silently become a different network.
        cidr = str(parse_network(net, f"{field}[{i}]", strict=True))
        (v6 if ip_version_of(cidr) == 6 else v4).append(cidr)
    return v4, v6


def _nats(value: object, field: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    v4: list[dict[str, str]] = []
    v6: list[dict[str, str]] = []
    for i, nat in enumerate(as_list(value, field)):
        nfield = f"{field}[{i}]"
        nat = as_dict(nat, nfield)
        int_ip = normalize_ip(nat.get("internalIP"), f"{nfield}.internalIP")
        ext_ip = normalize_ip(nat.get("externalIP"), f"{nfield}.externalIP")
        if ip_version_of(int_ip) != ip_version_of(ext_ip):
            raise InvalidResource("internalIP and externalIP differ in IP version", field=nfield)
        (v6 if ip_version_of(int_ip) == 6 else v4).append({"int_ip": int_ip, "ext_ip": ext_ip})
    return v4, v6


def workload_endpoint_identity(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    """(node, orchestrator, workload ID, endpoint) of a v3 WEP; the workload ID of a k8s WEP is
    ``<namespace>/<pod>``. Uses spec.node/orchestrator/pod/workload/endpoint when present,
    otherwise the parts of the name."""
    return _identity(resource, resource_namespace(resource), spec(resource))


def _identity(
    resource: dict[str, Any], namespace: str, s: dict[str, Any]
) -> tuple[str, str, str, str]:
    node = opt_str(s.get("node"), "spec.node")
    orch = opt_str(s.get("orchestrator"), "spec.orchestrator")
    pod = opt_str(s.get("pod"), "spec.pod")
    workload = opt_str(s.get("workload"), "spec.workload")
    endpoint = opt_str(s.get("endpoint"), "spec.endpoint")
    if not (node and orch and endpoint and (pod or workload)):
        n_node, n_orch, n_workload, n_endpoint = split_workload_endpoint_name(
            resource_name(resource)
        )
        node = node or n_node
        orch = orch or n_orch
        endpoint = endpoint or n_endpoint
        if orch == K8S_ORCHESTRATOR:
            pod = pod or n_workload
        else:
            workload = workload or n_workload
    if orch == K8S_ORCHESTRATOR:
        if not pod:
            raise InvalidResource("required for orchestrator k8s", field="spec.pod")
        workload = f"{namespace}/{pod}"
    return node, orch, workload, endpoint


def workload_endpoint_key_for(resource: dict[str, Any]) -> str:
    return keys.workload_endpoint_key(*workload_endpoint_identity(resource))


def workload_endpoint_updates(resource: dict[str, Any]) -> list[Update]:
    """v3 WorkloadEndpoint → one WorkloadEndpointKey update (a deletion when it has no IPs)."""
    namespace = resource_namespace(resource)
    s = spec(resource)
    node, orch, workload, endpoint = _identity(resource, namespace, s)
    key = keys.workload_endpoint_key(node, orch, workload, endpoint)
    ipv4_nets, ipv6_nets = _workload_nets(s.get("ipNetworks"), "spec.ipNetworks")
    if not ipv4_nets and not ipv6_nets:
        return [Update(key, None)]
    ipv4_nat, ipv6_nat = _nats(s.get("ipNATs"), "spec.ipNATs")
    meta = metadata(resource)

    # Checked but not sorted here: the value's labels are sorted below, with the added ones.
    labels = strip_reserved_labels(checked_str_map(meta.get("labels"), "metadata.labels"))
    labels[NAMESPACE_LABEL] = namespace
    labels[ORCHESTRATOR_LABEL] = orch
    service_account = opt_str(s.get("serviceAccountName"), "spec.serviceAccountName")
    if service_account:
        labels[SERVICE_ACCOUNT_LABEL] = service_account

    iface = opt_str(s.get("interfaceName"), "spec.interfaceName")
    if not iface and orch == K8S_ORCHESTRATOR:
        iface = k8s_interface_name(namespace, workload.split("/", 1)[1])
    mac = opt_str(s.get("mac"), "spec.mac")
    gw4 = opt_str(s.get("ipv4Gateway"), "spec.ipv4Gateway")
    gw6 = opt_str(s.get("ipv6Gateway"), "spec.ipv6Gateway")
    spoof = as_list(s.get("allowSpoofedSourcePrefixes"), "spec.allowSpoofedSourcePrefixes")
    value = {
        "state": "active",
        "name": iface,
        # libcalico-go's workload endpoint processor never sets it: always "" on Calico's wire.
        "active_instance_id": "",
        "mac": normalize_mac(mac, "spec.mac") if mac else None,
        "profile_ids": str_list(s.get("profiles"), "spec.profiles"),
        # Go's model marshals a nil list as null (no omitempty on these two).
        "ipv4_nets": ipv4_nets or None,
        "ipv6_nets": ipv6_nets or None,
        "ipv4_nat": ipv4_nat,
        "ipv6_nat": ipv6_nat,
        "labels": {k: labels[k] for k in sorted(labels)},
        "ipv4_gateway": normalize_ip(gw4, "spec.ipv4Gateway") if gw4 else None,
        "ipv6_gateway": normalize_ip(gw6, "spec.ipv6Gateway") if gw6 else None,
        "ports": _named_ports(s.get("ports"), "spec.ports"),
        "generate_name": opt_str(meta.get("generateName"), "metadata.generateName"),
        "allow_spoofed_source_ips": [
            normalize_cidr(p, f"spec.allowSpoofedSourcePrefixes[{i}]") for i, p in enumerate(spoof)
        ],
        "annotations": str_map(meta.get("annotations"), "metadata.annotations"),
    }
    return [Update(key, value)]


# --- HostEndpoint ---------------------------------------------------------------------------------


def host_endpoint_updates(resource: dict[str, Any]) -> list[Update]:
    """v3 HostEndpoint → one HostEndpointKey update keyed by (spec.node, metadata.name)."""
    name = resource_name(resource)
    s = spec(resource)
    node = req_str(s.get("node"), "spec.node")
    iface = opt_str(s.get("interfaceName"), "spec.interfaceName")
    expected = [
        normalize_ip(ip, f"spec.expectedIPs[{i}]")
        for i, ip in enumerate(as_list(s.get("expectedIPs"), "spec.expectedIPs"))
    ]
    if not iface and not expected:
        raise InvalidResource("one of interfaceName or expectedIPs is required", field="spec")
    value = {
        "name": iface,
        "expected_ipv4_addrs": [ip for ip in expected if ip_version_of(ip) == 4],
        "expected_ipv6_addrs": [ip for ip in expected if ip_version_of(ip) == 6],
        # No labels at all is null, as Go marshals a nil map (an empty map stays {}).
        "labels": str_map(metadata(resource).get("labels"), "metadata.labels")
        if metadata(resource).get("labels") is not None
        else None,
        "profile_ids": str_list(s.get("profiles"), "spec.profiles"),
        "ports": _named_ports(s.get("ports"), "spec.ports"),
    }
    return [Update(keys.host_endpoint_key(node, name), value)]
