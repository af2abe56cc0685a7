"""Kubernetes datastore (KDD): native objects → v3 resources → model updates (docs/model.md,
"Kubernetes datastore mapping").

Design: every converter here first builds the equivalent projectcalico.org/v3 resource (pure
dict → dict, so it can be inspected and tested on its own), and ``k8s_to_updates`` then runs it
through ``v3_to_updates``. The v3 objects carry only fields derived from what Calico uses, so
churn in fields Calico ignores (pod status conditions, containerStatuses, timestamps,
managedFields, resourceVersion, node heartbeats) yields byte-identical model values.

Converters: Pod → WorkloadEndpoint, Namespace → Profile ``kns.<ns>``, ServiceAccount → Profile
``ksa.<ns>.<sa>``, networking.k8s.io/v1 NetworkPolicy → KubernetesNetworkPolicy, Node → Node,
and every crd.projectcalico.org/v1 kind → the same v3 kind.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import uuid
from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    K8S_ORCHESTRATOR,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_LABEL_PREFIX,
    as_dict,
    as_list,
    describe,
    metadata,
    opt_int,
    opt_str,
    req_str,
    sorted_map,
    spec,
    str_map,
    strip_reserved_labels,
)
from typha.sync.convert.endpoints import (
    DEFAULT_INTERFACE_PREFIX,
    k8s_interface_name,
    workload_endpoint_name,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.kinds import API_VERSION_CRD, API_VERSION_V3, KINDS
from typha.sync.convert.knp import k8s_policy_spec_to_v3
from typha.sync.convert.v3 import v3_to_updates

# Pod annotations written by Calico's CNI plugin (and AWS VPC CNI).
ANNOTATION_POD_IPS = "cni.projectcalico.org/podIPs"
ANNOTATION_POD_IP = "cni.projectcalico.org/podIP"
ANNOTATION_AWS_POD_IPS = "vpc.amazonaws.com/pod-ips"
ANNOTATION_CONTAINER_ID = "cni.projectcalico.org/containerID"
# Our convention (Calico's CNI does not write one): the workload MAC, when a CNI records it.
ANNOTATION_MAC = "cni.projectcalico.org/mac"
# Pod annotations copied onto the WEP: only the QoS controls Felix reads. Copying all of them
# would turn annotation churn from other controllers into endpoint updates.
COPIED_ANNOTATION_PREFIX = "qos.projectcalico.org/"

# Node annotations written by calico-node.
NODE_ANNOTATIONS = {
    "ipv4Address": "projectcalico.org/IPv4Address",
    "ipv6Address": "projectcalico.org/IPv6Address",
    "ipv4IPIPTunnelAddr": "projectcalico.org/IPv4IPIPTunnelAddr",
    "asNumber": "projectcalico.org/ASNumber",
    "routeReflectorClusterID": "projectcalico.org/RouteReflectorClusterID",
    "ipv4VXLANTunnelAddr": "projectcalico.org/IPv4VXLANTunnelAddr",
    "vxlanTunnelMACAddr": "projectcalico.org/VXLANTunnelMACAddr",
    "ipv6VXLANTunnelAddr": "projectcalico.org/IPv6VXLANTunnelAddr",
    "vxlanTunnelMACAddrV6": "projectcalico.org/VXLANTunnelMACAddrV6",
    "interfaceIPv4Address": "projectcalico.org/IPv4WireguardInterfaceAddr",
    "interfaceIPv6Address": "projectcalico.org/IPv6WireguardInterfaceAddr",
    "wireguardPublicKey": "projectcalico.org/WireguardPublicKey",
    "wireguardPublicKeyV6": "projectcalico.org/WireguardPublicKeyV6",
}

NAMESPACE_NAME_LABEL = f"{NAMESPACE_LABEL_PREFIX}projectcalico.org/name"
SERVICE_ACCOUNT_NAME_LABEL = f"{SERVICE_ACCOUNT_LABEL_PREFIX}projectcalico.org/name"
_FINISHED_PHASES = ("Failed", "Succeeded")
_DROPPED_CRD_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "projectcalico.org/metadata",
)


def _v3(kind: str, name: str, namespace: str = "", **meta_extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in meta_extra.items() if v})
    return {"apiVersion": API_VERSION_V3, "kind": kind, "metadata": meta, "spec": {}}


# --- Pods -----------------------------------------------------------------------------------------


def _split_ips(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def pod_ip_networks(pod: dict[str, Any]) -> list[str]:
    """The pod's IPs as /32 or /128 CIDRs, deduplicated in order.

    Sources, first non-empty wins: the ``cni.projectcalico.org/podIPs`` annotation, ``…/podIP``,
    AWS ``vpc.amazonaws.com/pod-ips``, ``status.podIPs``, ``status.podIP``. The CNI annotations
    come first because Calico writes them at network setup, before the kubelet reports status.
    A terminating pod whose ``…/podIP`` annotation is ``""`` has released its IPs: none.
    """
    meta = metadata(pod)
    ann = str_map(meta.get("annotations"), "metadata.annotations")
    status = as_dict(pod.get("status"), "status")
    if meta.get("deletionTimestamp") and ann.get(ANNOTATION_POD_IP, None) == "":
        return []
    if ann.get(ANNOTATION_POD_IPS):
        raw, field = (
            _split_ips(ann[ANNOTATION_POD_IPS]),
            f"metadata.annotations.{ANNOTATION_POD_IPS}",
        )
    elif ann.get(ANNOTATION_POD_IP):
        raw, field = _split_ips(ann[ANNOTATION_POD_IP]), f"metadata.annotations.{ANNOTATION_POD_IP}"
    elif ann.get(ANNOTATION_AWS_POD_IPS):
        raw, field = (
            _split_ips(ann[ANNOTATION_AWS_POD_IPS]),
            f"metadata.annotations.{ANNOTATION_AWS_POD_IPS}",
        )
    elif as_list(status.get("podIPs"), "status.podIPs"):
        raw = [
            opt_str(as_dict(p, "status.podIPs[]").get("ip"), "status.podIPs[].ip")
            for p in status["podIPs"]
        ]
        field = "status.podIPs"
    else:
        raw, field = _split_ips(opt_str(status.get("podIP"), "status.podIP")), "status.podIP"
    nets: list[str] = []
    for text in raw:
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError:
            raise InvalidResource(f"{text!r} is not an IP address", field=field) from None
        net = f"{ip}/{ip.max_prefixlen}"
        if net not in nets:
            nets.append(net)
    return nets


def _pod_ports(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """containerPorts (containers, then init containers) that have a name or a hostPort."""
    out: list[dict[str, Any]] = []
    for group in ("containers", "initContainers"):
        for i, container in enumerate(as_list(pod_spec.get(group), f"spec.{group}")):
            cfield = f"spec.{group}[{i}]"
            for j, port in enumerate(
                as_list(as_dict(container, cfield).get("ports"), f"{cfield}.ports")
            ):
                pfield = f"{cfield}.ports[{j}]"
                port = as_dict(port, pfield)
                name = opt_str(port.get("name"), f"{pfield}.name")
                host_port = opt_int(port.get("hostPort"), f"{pfield}.hostPort")
                if not name and not host_port:
                    continue
                entry: dict[str, Any] = {
                    "name": name,
                    "protocol": opt_str(port.get("protocol"), f"{pfield}.protocol") or "TCP",
                    "port": opt_int(port.get("containerPort"), f"{pfield}.containerPort"),
                }
                if host_port:
                    entry["hostPort"] = host_port
                    host_ip = opt_str(port.get("hostIP"), f"{pfield}.hostIP")
                    if host_ip:
                        entry["hostIP"] = host_ip
                out.append(entry)
    return out


def _pod_skip_reason(pod: dict[str, Any], ips: list[str] | None = None) -> str:
    """Why a pod has no WorkloadEndpoint ("" if it has one). ``ips`` = pod_ip_networks(pod)
    when the caller already has them."""
    pod_spec = spec(pod)
    if pod_spec.get("hostNetwork") is True:
        return "host-network"
    if not opt_str(pod_spec.get("nodeName"), "spec.nodeName"):
        return "unscheduled"
    if as_dict(pod.get("status"), "status").get("phase") in _FINISHED_PHASES:
        return "finished"
    if not (pod_ip_networks(pod) if ips is None else ips):
        return "no-ip"
    return ""


def pod_workload_endpoint_key(pod: dict[str, Any]) -> str | None:
    """The model key a scheduled pod's endpoint has (None if it has no node yet)."""
    meta = metadata(pod)
    node = opt_str(spec(pod).get("nodeName"), "spec.nodeName")
    if not node:
        return None
    namespace = req_str(meta.get("namespace"), "metadata.namespace")
    workload = f"{namespace}/{req_str(meta.get('name'), 'metadata.name')}"
    return keys.workload_endpoint_key(node, K8S_ORCHESTRATOR, workload, "eth0")


def _build_workload_endpoint(
    pod: dict[str, Any], ips: list[str], interface_prefix: str
) -> dict[str, Any]:
    meta = metadata(pod)
    name = req_str(meta.get("name"), "metadata.name")
    namespace = req_str(meta.get("namespace"), "metadata.namespace")
    pod_spec = spec(pod)
    node = req_str(pod_spec.get("nodeName"), "spec.nodeName")
    service_account = opt_str(
        pod_spec.get("serviceAccountName"), "spec.serviceAccountName"
    ) or opt_str(pod_spec.get("serviceAccount"), "spec.serviceAccount")
    ann = str_map(meta.get("annotations"), "metadata.annotations")

    labels = strip_reserved_labels(str_map(meta.get("labels"), "metadata.labels"))
    labels[NAMESPACE_LABEL] = namespace
    labels[ORCHESTRATOR_LABEL] = K8S_ORCHESTRATOR
    if service_account:
        labels[SERVICE_ACCOUNT_LABEL] = service_account
    profiles = [f"kns.{namespace}"]
    if service_account:
        profiles.append(f"ksa.{namespace}.{service_account}")

    wep = _v3(
        "WorkloadEndpoint",
        workload_endpoint_name(node, K8S_ORCHESTRATOR, name, "eth0"),
        namespace,
        generateName=opt_str(meta.get("generateName"), "metadata.generateName"),
        labels=sorted_map(labels),
        annotations={k: v for k, v in ann.items() if k.startswith(COPIED_ANNOTATION_PREFIX)},
    )
    wep_spec: dict[str, Any] = {
        "orchestrator": K8S_ORCHESTRATOR,
        "node": node,
        "pod": name,
        "endpoint": "eth0",
        "containerID": ann.get(ANNOTATION_CONTAINER_ID, ""),
        "serviceAccountName": service_account,
        "ipNetworks": ips,
        "profiles": profiles,
        "interfaceName": k8s_interface_name(namespace, name, interface_prefix),
        "ports": _pod_ports(pod_spec),
    }
    if ann.get(ANNOTATION_MAC):
        wep_spec["mac"] = ann[ANNOTATION_MAC]
    wep["spec"] = wep_spec
    return wep


def _convert_pod(pod: dict[str, Any], interface_prefix: str) -> tuple[str, dict[str, Any] | None]:
    """(skip reason, v3 WEP or None), reading the pod's IPs once."""
    try:
        pod_spec = spec(pod)
        scheduled = pod_spec.get("hostNetwork") is not True and pod_spec.get("nodeName")
        ips = pod_ip_networks(pod) if scheduled else []
        reason = _pod_skip_reason(pod, ips)
        if reason:
            return reason, None
        return "", _build_workload_endpoint(pod, ips, interface_prefix)
    except InvalidResource as exc:
        raise exc.in_resource(describe({**pod, "kind": "Pod"})) from None


def pod_to_workload_endpoint(
    pod: dict[str, Any], *, interface_prefix: str = DEFAULT_INTERFACE_PREFIX
) -> dict[str, Any] | None:
    """A Pod → the v3 WorkloadEndpoint Calico derives from it, or None when the pod has none
    (host-networked, unscheduled, Failed/Succeeded, or without an IP)."""
    return _convert_pod(pod, interface_prefix)[1]


def pod_to_updates(
    pod: dict[str, Any], *, interface_prefix: str = DEFAULT_INTERFACE_PREFIX
) -> list[Update]:
    """A Pod → its WorkloadEndpoint update.

    Host-networked and unscheduled pods never have an endpoint (both fields are immutable once
    set), so they give ``[]``; a finished or IP-less pod may have had one, so it gives a
    deletion of its key.
    """
    reason, wep = _convert_pod(pod, interface_prefix)
    if reason in ("host-network", "unscheduled"):
        return []
    if wep is None:
        key = pod_workload_endpoint_key(pod)
        assert key is not None  # scheduled, checked above
        return [Update(key, None)]
    return v3_to_updates(wep)


# --- Namespaces and service accounts --------------------------------------------------------------


KUBE_LABELS_ANNOTATION = "projectcalico.org/kube-labels"


def derived_uid(uid: object) -> str | None:
    """The uid Calico gives an object derived from a Kubernetes one (a namespace's or service
    account's profile), so the two never share a uid: every byte of the UUID bit-reversed, except
    the version (byte 6) and variant (byte 8) bytes.  None when ``uid`` is not a UUID."""
    if not isinstance(uid, str):
        return None
    try:
        raw = uuid.UUID(uid).bytes
    except ValueError:
        return None
    out = bytearray(int(f"{b:08b}"[::-1], 2) for b in raw)
    out[6], out[8] = raw[6], raw[8]
    return str(uuid.UUID(bytes=bytes(out)))


def namespace_to_profile(namespace: dict[str, Any]) -> dict[str, Any]:
    """Namespace → Profile ``kns.<ns>``: labels to apply ``pcns.<label>`` plus
    ``pcns.projectcalico.org/name``, and allow-all ingress and egress (k8s default-allow)."""
    meta = metadata(namespace)
    name = req_str(meta.get("name"), "metadata.name")
    labels = {
        NAMESPACE_LABEL_PREFIX + k: v
        for k, v in str_map(meta.get("labels"), "metadata.labels").items()
    }
    labels[NAMESPACE_NAME_LABEL] = name
    # Calico's Kubernetes backend gives the profile its namespace's uid and creation time.
    profile = _v3(
        "Profile",
        f"kns.{name}",
        uid=derived_uid(meta.get("uid")),
        creationTimestamp=meta.get("creationTimestamp"),
    )
    profile["spec"] = {
        "ingress": [{"action": "Allow"}],
        "egress": [{"action": "Allow"}],
        "labelsToApply": sorted_map(labels),
    }
    return profile


def service_account_to_profile(service_account: dict[str, Any]) -> dict[str, Any]:
    """ServiceAccount → Profile ``ksa.<ns>.<sa>``: ``pcsa.``-prefixed labels plus
    ``pcsa.projectcalico.org/name``; no rules."""
    meta = metadata(service_account)
    name = req_str(meta.get("name"), "metadata.name")
    namespace = req_str(meta.get("namespace"), "metadata.namespace")
    labels = {
        SERVICE_ACCOUNT_LABEL_PREFIX + k: v
        for k, v in str_map(meta.get("labels"), "metadata.labels").items()
    }
    labels[SERVICE_ACCOUNT_NAME_LABEL] = name
    profile = _v3(
        "Profile",
        f"ksa.{namespace}.{name}",
        uid=derived_uid(meta.get("uid")),
        creationTimestamp=meta.get("creationTimestamp"),
    )
    profile["spec"] = {"labelsToApply": sorted_map(labels)}
    return profile


# --- NetworkPolicy --------------------------------------------------------------------------------


def network_policy_to_v3(policy: dict[str, Any]) -> dict[str, Any]:
    """networking.k8s.io/v1 NetworkPolicy → v3 ``KubernetesNetworkPolicy`` (same name and
    namespace, tier ``default``, order 1000; docs/model.md, "Kubernetes datastore mapping")."""
    meta = metadata(policy)
    out = _v3(
        "KubernetesNetworkPolicy",
        req_str(meta.get("name"), "metadata.name"),
        req_str(meta.get("namespace"), "metadata.namespace"),
    )
    out["spec"] = k8s_policy_spec_to_v3(policy.get("spec"))
    return out


# --- Nodes ----------------------------------------------------------------------------------------


def node_to_v3(node: dict[str, Any]) -> dict[str, Any]:
    """k8s Node → v3 Node from calico-node's annotations.

    ``spec.addresses`` lists the annotated Calico addresses (type ``CalicoNodeIP``) followed by
    the node's ``InternalIP``/``ExternalIP`` status addresses, so a node without Calico
    annotations still has an address. ``status.podCIDRs`` comes from ``spec.podCIDRs``.
    """
    meta = metadata(node)
    name = req_str(meta.get("name"), "metadata.name")
    ann = str_map(meta.get("annotations"), "metadata.annotations")

    def get(field: str) -> str:
        return ann.get(NODE_ANNOTATIONS[field], "")

    labels = str_map(meta.get("labels"), "metadata.labels")
    # As Calico's Kubernetes backend builds it: the node's uid and creation time, its labels, and
    # those labels again as JSON in the kube-labels annotation ("null" when it has none).
    kube_labels = json.dumps(labels, separators=(",", ":"), sort_keys=True) if labels else "null"
    out = _v3(
        "Node",
        name,
        uid=meta.get("uid"),
        creationTimestamp=meta.get("creationTimestamp"),
        labels=labels,
        annotations={KUBE_LABELS_ANNOTATION: kube_labels},
    )
    s: dict[str, Any] = {}
    addresses = [
        {"address": get(f), "type": "CalicoNodeIP"}
        for f in ("ipv4Address", "ipv6Address")
        if get(f)
    ]
    for i, addr in enumerate(
        as_list(as_dict(node.get("status"), "status").get("addresses"), "status.addresses")
    ):
        addr = as_dict(addr, f"status.addresses[{i}]")
        if addr.get("type") in ("InternalIP", "ExternalIP"):
            addresses.append(
                {
                    "address": req_str(addr.get("address"), f"status.addresses[{i}].address"),
                    "type": addr["type"],
                }
            )
    if addresses:
        s["addresses"] = addresses
    bgp = {
        f: get(f)
        for f in ("ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "routeReflectorClusterID")
        if get(f)
    }
    if get("asNumber"):
        if not get("asNumber").isdigit():
            raise InvalidResource(
                "not a number", field=f"metadata.annotations.{NODE_ANNOTATIONS['asNumber']}"
            )
        bgp["asNumber"] = int(get("asNumber"))
    if bgp:
        s["bgp"] = bgp
    for f in (
        "ipv4VXLANTunnelAddr",
        "vxlanTunnelMACAddr",
        "ipv6VXLANTunnelAddr",
        "vxlanTunnelMACAddrV6",
    ):
        if get(f):
            s[f] = get(f)
    wireguard = {f: get(f) for f in ("interfaceIPv4Address", "interfaceIPv6Address") if get(f)}
    if wireguard:
        s["wireguard"] = wireguard
    s["orchRefs"] = [{"nodeName": name, "orchestrator": K8S_ORCHESTRATOR}]
    out["spec"] = s
    status = {f: get(f) for f in ("wireguardPublicKey", "wireguardPublicKeyV6") if get(f)}
    pod_cidrs = [c for c in as_list(spec(node).get("podCIDRs"), "spec.podCIDRs") if c]
    if pod_cidrs:
        status["podCIDRs"] = pod_cidrs
    if status:
        out["status"] = status
    return out


# --- Calico CRDs ----------------------------------------------------------------------------------


CALICO_METADATA_ANNOTATION = "projectcalico.org/metadata"


def crd_to_v3(obj: dict[str, Any]) -> dict[str, Any]:
    """A crd.projectcalico.org/v1 object → the projectcalico.org/v3 object of the same kind, as
    Calico's Kubernetes backend converts it: same spec (and status); metadata the custom
    resource's own (generation, managedFields and every annotation included), or the v3 metadata
    Calico stored in its ``projectcalico.org/metadata`` annotation; the uid derived, never the
    custom resource's; no resourceVersion (the wire carries it separately)."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidResource(
            f"unknown Calico CRD kind {kind!r}", field="kind", resource=describe(obj)
        )
    meta = metadata(obj)
    out = copy.deepcopy(obj)
    out["apiVersion"] = API_VERSION_V3
    annotations = dict(as_dict(meta.get("annotations"), "metadata.annotations"))
    note = annotations.pop(CALICO_METADATA_ANNOTATION, None)
    if note is None:
        # As Calico's Kubernetes backend: the custom resource's own metadata.
        new_meta = copy.deepcopy(meta)
    else:
        # Calico stored the v3 metadata in the annotation: it wins, labels and annotations are
        # merged over the custom resource's own, name and namespace stay the resource's.
        try:
            stored = json.loads(note)
        except ValueError:
            raise InvalidResource(
                "not JSON", field=f"metadata.annotations.{CALICO_METADATA_ANNOTATION}"
            ) from None
        new_meta = dict(as_dict(stored, f"metadata.annotations.{CALICO_METADATA_ANNOTATION}"))
        labels = {**str_map(meta.get("labels"), "metadata.labels")}
        labels.update(str_map(new_meta.get("labels"), "metadata.labels"))
        annotations.update(str_map(new_meta.get("annotations"), "metadata.annotations"))
        new_meta.pop("labels", None)
        new_meta.pop("annotations", None)
        new_meta["name"] = new_meta.get("name") or meta.get("name")
        for k in ("namespace", "uid"):
            if meta.get(k):
                new_meta[k] = meta[k]
        if labels:
            new_meta["labels"] = labels
        if annotations:
            new_meta["annotations"] = annotations
        if not new_meta.get("creationTimestamp") and meta.get("creationTimestamp"):
            new_meta["creationTimestamp"] = meta["creationTimestamp"]
    # Calico never reuses the custom resource's uid (see derived_uid).
    if new_meta.get("uid"):
        new_meta["uid"] = derived_uid(new_meta["uid"]) or new_meta["uid"]
    new_meta.pop("resourceVersion", None)
    out["metadata"] = new_meta
    return out


# --- Services and EndpointSlices -----------------------------------------------------------------

# The resource plurals libcalico-go's model gives these Kubernetes kinds in key paths.
SERVICE_PLURAL = "kubernetesservice"
ENDPOINT_SLICE_PLURAL = "kubernetesendpointslices"


def kubernetes_passthrough(obj: dict[str, Any], plural: str) -> list[Update]:
    """A Service or EndpointSlice as Calico Typha's felix syncer sends it on Kubernetes: the
    object as the apiserver returns it, without type fields (a Go client decodes it into the
    Kubernetes type itself) and without resourceVersion (the wire carries that separately)."""
    meta = metadata(obj)
    name = req_str(meta.get("name"), "metadata.name")
    namespace = req_str(meta.get("namespace"), "metadata.namespace")
    value = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}
    value["metadata"] = {k: v for k, v in value["metadata"].items() if k != "resourceVersion"}
    return [Update(keys.resource_key(plural, name, namespace), value)]


# --- dispatch -------------------------------------------------------------------------------------


def k8s_to_updates(
    obj: dict[str, Any], *, interface_prefix: str = DEFAULT_INTERFACE_PREFIX
) -> list[Update]:
    """Any object a KDD watch delivers → model updates ([] for kinds Typha does not serve).

    Like ``v3_to_updates``, the result is the complete set of keys the object produces now;
    feed it through a ``ResourceExpander`` keyed by (kind, namespace, name).
    """
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    try:
        if api_version == API_VERSION_CRD:
            return v3_to_updates(crd_to_v3(obj))
        if api_version == "v1":
            if kind == "Pod":
                return pod_to_updates(obj, interface_prefix=interface_prefix)
            if kind == "Namespace":
                return v3_to_updates(namespace_to_profile(obj))
            if kind == "ServiceAccount":
                return v3_to_updates(service_account_to_profile(obj))
            if kind == "Node":
                return v3_to_updates(node_to_v3(obj))
            if kind == "Service":
                return kubernetes_passthrough(obj, SERVICE_PLURAL)
        if api_version == "discovery.k8s.io/v1" and kind == "EndpointSlice":
            return kubernetes_passthrough(obj, ENDPOINT_SLICE_PLURAL)
        if api_version == "networking.k8s.io/v1" and kind == "NetworkPolicy":
            return v3_to_updates(network_policy_to_v3(obj))
    except InvalidResource as exc:
        raise exc.in_resource(describe(obj)) from None
    return []
