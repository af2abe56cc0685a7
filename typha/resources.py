"""The pure part of ``typha apply/delete -f``: load documents, validate and normalise them, and
build WorkloadEndpoints the way Calico's CNI plugin writes them.

Writing to a datastore is the CLI's job (``typha.sync.convert.etcd_key_for`` /
``etcd_value_for`` say where and what for etcd).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from typha import jsonlimit
from typha.sync.convert import InvalidResource, crd_to_v3, v3_to_updates
from typha.sync.convert._common import (
    K8S_ORCHESTRATOR,
    NAMESPACE_LABEL,
    ORCHESTRATOR_LABEL,
    SERVER_METADATA_FIELDS,
    SERVICE_ACCOUNT_LABEL,
    describe,
    ip_version_of,
    parse_interface,
)
from typha.sync.convert.endpoints import (
    DEFAULT_INTERFACE_PREFIX,
    k8s_interface_name,
    workload_endpoint_name,
)
from typha.sync.convert.kinds import API_VERSION_CRD, API_VERSION_V3, KINDS
from typha.sync.convert.policy import POLICY_KINDS, WELL_KNOWN_TIERS

DOCUMENT_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"


# --- loading --------------------------------------------------------------------------------------


def _expand(doc: object, source: str) -> list[dict[str, Any]]:
    """One parsed document → resources (a ``List``/``*List`` or a bare JSON array is flattened)."""
    if doc is None:
        return []
    if isinstance(doc, list):
        return [r for item in doc for r in _expand(item, source)]
    if not isinstance(doc, dict):
        raise InvalidResource(
            f"a document must be a mapping, got {type(doc).__name__}", resource=source
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if not isinstance(items, list):
            raise InvalidResource("items must be a list", field="items", resource=source)
        return [r for item in items for r in _expand(item, source)]
    return [doc]


# Input limits: a YAML alias "bomb" (a few lines whose aliases expand to billions of values)
# would hang validation and the JSON encoding of the values; deep nesting would raise
# RecursionError in the parser or later.
MAX_EXPANDED_VALUES = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one;
    calicoctl refuses them too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _StrictLoader.construct_yaml_map,  # builds via construct_mapping above
)


def _check_expansion(doc: object, source: str) -> None:
    """Refuse a document that expands (aliases included) to more than MAX_EXPANDED_VALUES
    values or nests deeper than ``jsonlimit.MAX_DEPTH``; iterative, stops at the first limit."""
    budget = MAX_EXPANDED_VALUES
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise InvalidResource(
                f"expands to more than {MAX_EXPANDED_VALUES:,} values (YAML aliases?)",
                resource=source,
            )
        if isinstance(value, dict):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= jsonlimit.MAX_DEPTH:
            raise InvalidResource(
                f"nested deeper than {jsonlimit.MAX_DEPTH} levels", resource=source
            )
        stack.extend((child, depth + 1) for child in children)


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what went wrong and where (PyYAML's own text spans several
    lines, quoting the input)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def parse_documents(text: str, source: str = "<string>") -> list[dict[str, Any]]:
    """YAML (multi-document) or JSON text → resource dicts, Lists flattened, empty docs dropped.

    Refused with InvalidResource: duplicate keys, nesting deeper than ``jsonlimit.MAX_DEPTH``
    and documents that expand to more than MAX_EXPANDED_VALUES values."""
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        # JSON is YAML, so a YAML error is also the JSON error; report YAML's position.
        raise InvalidResource(f"cannot parse: {_one_line(exc)}", resource=source) from None
    except RecursionError:
        raise InvalidResource("cannot parse: nested too deep", resource=source) from None
    for doc in docs:
        _check_expansion(doc, source)
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        out.extend(_expand(doc, f"{source}#{i}" if len(docs) > 1 else source))
    return out


def _document_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
        )
    return [path]


def load_documents(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a file, or every ``*.yaml``/``*.yml``/``*.json`` under a directory (recursively, in
    sorted path order), into resource dicts. Raises InvalidResource naming the file on parse
    errors and OSError when a path cannot be read."""
    out: list[dict[str, Any]] = []
    for file in _document_files(Path(path)):
        out.extend(parse_documents(file.read_text(encoding="utf-8"), str(file)))
    return out


# --- validation -----------------------------------------------------------------------------------


def _default_policy(spec: dict[str, Any], kind: str) -> None:
    spec.setdefault("tier", "default")
    if POLICY_KINDS[kind][1]:
        spec.setdefault("stagedAction", "Set")
    if kind == "StagedKubernetesNetworkPolicy" or "podSelector" in spec:
        return  # k8s-shaped spec: policyTypes keep their k8s meaning
    if not spec.get("types"):
        ingress, egress = bool(spec.get("ingress")), bool(spec.get("egress"))
        if egress and not ingress:
            spec["types"] = ["Egress"]
        elif egress:
            spec["types"] = ["Ingress", "Egress"]
        else:
            spec["types"] = ["Ingress"]


def _default_tier(spec: dict[str, Any], name: str) -> None:
    order, action = WELL_KNOWN_TIERS.get(name, (None, "Deny"))
    spec.setdefault("defaultAction", action)
    if order is not None:
        spec.setdefault("order", order)


def _default_ip_pool(spec: dict[str, Any]) -> None:
    cidr = spec.get("cidr")
    v6 = isinstance(cidr, str) and ":" in cidr
    spec.setdefault("blockSize", 122 if v6 else 26)
    spec.setdefault("ipipMode", "Never")
    spec.setdefault("vxlanMode", "Never")
    spec.setdefault("natOutgoing", False)
    spec.setdefault("disabled", False)
    spec.setdefault("nodeSelector", "all()")
    spec.setdefault("allowedUses", ["Workload", "Tunnel"])
    spec.setdefault("assignmentMode", "Automatic")


def validate_resource(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Check one v3 resource and return a normalised copy with Calico's defaults filled in.

    Accepts ``projectcalico.org/v3`` (the default when apiVersion is missing) and
    ``crd.projectcalico.org/v1`` objects (converted to v3). Namespaced kinds default to namespace
    ``default``; server-maintained metadata (resourceVersion, managedFields, ...) is removed, so
    apply is last-writer-wins. The resource is valid when its conversion to model keys succeeds.
    Raises InvalidResource naming the document (``Kind ns/name``) and the field.
    """
    label = describe(resource)
    if not isinstance(resource, Mapping):
        raise InvalidResource("a resource must be a mapping", resource=label)
    res = copy.deepcopy(dict(resource))
    if res.get("apiVersion") is None:
        res["apiVersion"] = API_VERSION_V3
    api_version = res["apiVersion"]
    if api_version == API_VERSION_CRD:
        res = crd_to_v3(res)
    elif api_version != API_VERSION_V3:
        raise InvalidResource(
            f"apiVersion must be {API_VERSION_V3} (got {api_version!r})", resource=label
        )
    kind = res.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        raise InvalidResource(f"unknown kind {kind!r}", field="kind", resource=label)
    meta = res.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidResource("required", field="metadata", resource=label)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidResource("required", field="metadata.name", resource=label)
    if "/" in name or len(name) > 253:
        raise InvalidResource(
            "must be at most 253 characters and contain no '/'",
            field="metadata.name",
            resource=label,
        )
    if info.namespaced:
        meta.setdefault("namespace", DEFAULT_NAMESPACE)
    elif meta.get("namespace"):
        raise InvalidResource(
            f"{kind} is cluster-scoped and takes no namespace",
            field="metadata.namespace",
            resource=label,
        )
    for f in SERVER_METADATA_FIELDS:
        meta.pop(f, None)
    spec = res.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise InvalidResource("expected a mapping", field="spec", resource=label)

    label = describe(res)
    if kind in POLICY_KINDS:
        _default_policy(spec, kind)
    elif kind == "Tier":
        _default_tier(spec, name)
    elif kind == "IPPool":
        _default_ip_pool(spec)
    v3_to_updates(res)  # raises InvalidResource(resource=label) when the resource is invalid
    return res


def validate_resources(resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``validate_resource`` over many, failing on the first invalid one."""
    return [validate_resource(r) for r in resources]


# --- CNI-style WorkloadEndpoints ------------------------------------------------------------------


def workload_endpoint_for_pod(
    node: str,
    namespace: str,
    pod: str,
    ip: str | Sequence[str],
    labels: Mapping[str, str] | None = None,
    *,
    service_account: str | None = "default",
    container_id: str = "",
    endpoint: str = "eth0",
    mac: str | None = None,
    ports: Sequence[Mapping[str, Any]] = (),
    interface_prefix: str = DEFAULT_INTERFACE_PREFIX,
) -> dict[str, Any]:
    """A v3 WorkloadEndpoint as Calico's CNI plugin writes it for a Kubernetes pod.

    Name ``<node>-k8s-<pod>-<endpoint>`` with ``-`` doubled inside each part; labels = the pod's
    labels plus namespace, orchestrator and service-account labels; ipNetworks = each IP as /32
    or /128; profiles ``kns.<ns>`` then ``ksa.<ns>.<sa>`` (omitted when ``service_account`` is
    None); interface ``cali`` + 11 hex digits of SHA-1(``"<ns>.<pod>"``). ``ports`` are
    ``{name, protocol, port}`` mappings.
    """
    ips = [ip] if isinstance(ip, str) else list(ip)
    nets = []
    for i, text in enumerate(ips):
        addr = parse_interface(text, f"ip[{i}]").ip
        nets.append(f"{addr}/{32 if ip_version_of(str(addr)) == 4 else 128}")
    all_labels = dict(labels or {})
    all_labels[NAMESPACE_LABEL] = namespace
    all_labels[ORCHESTRATOR_LABEL] = K8S_ORCHESTRATOR
    if service_account:
        all_labels[SERVICE_ACCOUNT_LABEL] = service_account
    profiles = [f"kns.{namespace}"]
    if service_account:
        profiles.append(f"ksa.{namespace}.{service_account}")
    spec: dict[str, Any] = {
        "orchestrator": K8S_ORCHESTRATOR,
        "node": node,
        "containerID": container_id,
        "pod": pod,
        "endpoint": endpoint,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    spec["ipNetworks"] = nets
    spec["profiles"] = profiles
    spec["interfaceName"] = k8s_interface_name(namespace, pod, interface_prefix)
    if mac:
        spec["mac"] = mac
    if ports:
        spec["ports"] = [
            {"name": p["name"], "protocol": p.get("protocol", "TCP"), "port": p["port"]}
            for p in ports
        ]
    return {
        "apiVersion": API_VERSION_V3,
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": workload_endpoint_name(node, K8S_ORCHESTRATOR, pod, endpoint),
            "namespace": namespace,
            "labels": {k: all_labels[k] for k in sorted(all_labels)},
        },
        "spec": spec,
    }


def dump_documents(resources: Iterable[Mapping[str, Any]]) -> str:
    """Resources → multi-document YAML (stable key order), e.g. for ``typha get -o yaml``."""
    return yaml.safe_dump_all(
        [json.loads(json.dumps(r)) for r in resources], sort_keys=False, default_flow_style=False
    )
