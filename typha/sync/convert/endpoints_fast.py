"""The common shape of a Kubernetes WorkloadEndpoint, converted without the general path.

A cold start converts every listed endpoint (20,000 of them in a mid-sized cluster), and nearly
all have the shape Calico's CNI plugin writes: a k8s orchestrator with node, pod and endpoint
in the spec, canonical IPv4 host networks, string labels and annotations, plain container
ports, no NATs, gateways or spoofing exceptions. For that shape
:func:`common_workload_endpoint` builds the same update as
``endpoints.workload_endpoint_updates`` (after ``convert_etcd_kv``'s and ``v3_to_updates``'
checks) with one pass of exact type tests instead of the field helpers.

It never raises: anything else — another type, an empty or missing field the general path
reads in another way, a field it would normalise or reject — returns ``None`` and the caller
takes the general path, which gives the result or the error. So the fast path only has to be
*right when it answers*; ``tests/sync/convert/test_endpoints_fast_parity.py`` pins it to the
general path on generated inputs.
"""

from __future__ import annotations

from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    _MAC,
    K8S_ORCHESTRATOR,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_LABEL_PREFIX,
)
from typha.sync.convert.endpoints import _CANONICAL_V4_HOST, k8s_interface_name
from typha.sync.convert.kinds import API_VERSION_V3

_RESERVED_PREFIXES = (NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX)
_API_VERSIONS = (None, API_VERSION_V3)
_EMPTY = (None, [])
_NO_STR = (None, "")


def _opt_str(value: object) -> str | None:
    """``None``/absent → ``""``; a string as it is; anything else → ``None`` (not this shape)."""
    if value is None:
        return ""
    return value if type(value) is str else None


def _sorted_str_map(value: object) -> dict[str, str] | None:
    """A ``{str: str}`` (``None`` reads as empty) sorted by key; ``None`` for anything else."""
    if value is None:
        return {}
    if type(value) is not dict:
        return None
    for v in value.values():
        if type(v) is not str:
            return None
    for k in value:
        if type(k) is not str:
            return None
    return {k: value[k] for k in sorted(value)}


# The protocols a pod's container port may name, as Kubernetes spells them, and as the general
# path's normalize_protocol gives them.
_PORT_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def _named_ports(value: object) -> list[dict[str, Any]] | None:
    """The named ports of ``spec.ports`` as ``endpoints._named_ports`` gives them, when each
    port is a mapping with a string name, a port number and a Kubernetes protocol (or none);
    ``None`` for anything else."""
    if value is None:
        return []
    if type(value) is not list:
        return None
    out = []
    for p in value:
        if type(p) is not dict:
            return None
        name = _opt_str(p.get("name"))
        port = p.get("port")
        if name is None or type(port) is not int or not 0 <= port <= 65535:
            return None
        protocol = p.get("protocol") or "TCP"
        if type(protocol) is not str or protocol not in _PORT_PROTOCOLS:
            return None
        protocol = _PORT_PROTOCOLS[protocol]
        if name:
            out.append({"name": name, "protocol": protocol, "port": port})
    return out


def _endpoint_labels(value: object, namespace: str, service_account: str) -> dict[str, str] | None:
    """The value's labels as ``workload_endpoint_updates`` gives them (reserved ones dropped,
    the namespace, orchestrator and service-account labels set, sorted by key), or ``None``
    if ``value`` is not a ``{str: str}``. The CNI plugin writes those three labels itself, and
    etcd holds the map sorted (Go's JSON sorts map keys): then the answer is a plain copy."""
    if value is None:
        value = {}
    elif type(value) is not dict:
        return None
    as_is = True  # no reserved label, keys in ascending order
    prev = ""
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            return None
        if as_is and (k <= prev or k.startswith(_RESERVED_PREFIXES)):
            as_is = False
        prev = k
    if (
        as_is
        and value.get(NAMESPACE_LABEL) == namespace
        and value.get(ORCHESTRATOR_LABEL) == K8S_ORCHESTRATOR
        and (not service_account or value.get(SERVICE_ACCOUNT_LABEL) == service_account)
    ):
        return dict(value)
    own = {k: v for k, v in value.items() if not k.startswith(_RESERVED_PREFIXES)}
    own[NAMESPACE_LABEL] = namespace
    own[ORCHESTRATOR_LABEL] = K8S_ORCHESTRATOR
    if service_account:
        own[SERVICE_ACCOUNT_LABEL] = service_account
    return {k: own[k] for k in sorted(own)}


def common_workload_endpoint(namespace: str, name: str, obj: dict[str, Any]) -> Update | None:
    """The update of the WorkloadEndpoint ``obj`` stored under ``<namespace>/<name>`` (both
    already unescaped), or ``None`` if it is not of the common shape (see the module doc)."""
    if type(obj) is not dict or not namespace or not name or "/" in namespace:
        return None
    if obj.get("apiVersion") not in _API_VERSIONS:
        return None
    if obj.get("kind", "WorkloadEndpoint") != "WorkloadEndpoint":
        return None
    meta = obj.get("metadata")
    if type(meta) is not dict or meta.get("name") != name or meta.get("namespace") != namespace:
        return None
    s = obj.get("spec")
    if type(s) is not dict or s.get("orchestrator") != K8S_ORCHESTRATOR:
        return None
    node = s.get("node")
    pod = s.get("pod")
    endpoint = s.get("endpoint")
    if not (type(node) is str and node and type(pod) is str and pod):
        return None
    if not (type(endpoint) is str and endpoint):
        return None
    workload = s.get("workload")
    if workload is not None and type(workload) is not str:
        return None

    nets = s.get("ipNetworks")
    if type(nets) is not list or not nets:
        return None
    for net in nets:
        if type(net) is not str or not _CANONICAL_V4_HOST.fullmatch(net):
            return None
    if s.get("ipNATs") not in _EMPTY:
        return None
    ports = _named_ports(s.get("ports"))
    if ports is None or s.get("allowSpoofedSourcePrefixes") not in _EMPTY:
        return None
    if s.get("ipv4Gateway") not in _NO_STR or s.get("ipv6Gateway") not in _NO_STR:
        return None

    service_account = _opt_str(s.get("serviceAccountName"))
    if service_account is None:
        return None
    labels = _endpoint_labels(meta.get("labels"), namespace, service_account)
    if labels is None:
        return None

    iface = _opt_str(s.get("interfaceName"))
    if iface is None:
        return None
    if not iface:
        iface = k8s_interface_name(namespace, pod)
    mac = s.get("mac")
    if mac is None or mac == "":
        mac = None
    elif type(mac) is str and _MAC.match(mac):
        mac = mac.lower().replace("-", ":")
    else:
        return None
    profiles = s.get("profiles")
    if profiles is None:
        profiles = []
    elif type(profiles) is list:
        for p in profiles:
            if type(p) is not str:
                return None
        profiles = list(profiles)
    else:
        return None
    generate_name = _opt_str(meta.get("generateName"))
    if generate_name is None:
        return None
    annotations = _sorted_str_map(meta.get("annotations"))
    if annotations is None:
        return None

    # The same dict, key for key and in the same order, as workload_endpoint_updates builds.
    value = {
        "state": "active",
        "name": iface,
        "active_instance_id": "",
        "mac": mac,
        "profile_ids": profiles,
        "ipv4_nets": list(nets),
        "ipv6_nets": None,
        "ipv4_nat": [],
        "ipv6_nat": [],
        "labels": labels,
        "ipv4_gateway": None,
        "ipv6_gateway": None,
        "ports": ports,
        "generate_name": generate_name,
        "allow_spoofed_source_ips": [],
        "annotations": annotations,
    }
    key = keys.workload_endpoint_key(node, K8S_ORCHESTRATOR, f"{namespace}/{pod}", endpoint)
    return Update(key, value)
