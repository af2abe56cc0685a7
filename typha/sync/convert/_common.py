"""Small shared helpers: typed field access, IP/CIDR parsing, label maps, canonical copies.

Every helper takes the field path it is reading (``spec.ingress[0].source.nets``) so that an
``InvalidResource`` says exactly which field is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from typha.sync.convert.errors import InvalidResource

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
K8S_ORCHESTRATOR = "k8s"

# Metadata fields the API server maintains; they change without the object changing, so they
# must never reach a model value (the cache dedupes by encoded bytes).
SERVER_METADATA_FIELDS = ("resourceVersion", "managedFields", "selfLink", "generation")
# What a passthrough v3 object loses: only its resourceVersion, which Calico's wire carries as the
# update's V3ResourceVersion instead (and which would defeat the byte dedupe).  Calico Typha keeps
# the rest of the metadata, generation and managedFields included.
PASSTHROUGH_DROPPED_METADATA = ("resourceVersion", "selfLink")


# --- typed access ---------------------------------------------------------------------------------


def type_name(value: object) -> str:
    return type(value).__name__


def as_dict(value: object, field: str) -> dict[str, Any]:
    """A mapping field; ``None``/absent reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidResource(f"expected a mapping, got {type_name(value)}", field=field)
    return value


def as_list(value: object, field: str) -> list[Any]:
    """A list field; ``None``/absent reads as empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidResource(f"expected a list, got {type_name(value)}", field=field)
    return value


def opt_str(value: object, field: str) -> str:
    """An optional string field; ``None``/absent reads as ``""``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidResource(f"expected a string, got {type_name(value)}", field=field)
    return value


def req_str(value: object, field: str) -> str:
    s = opt_str(value, field)
    if not s:
        raise InvalidResource("required", field=field)
    return s


def opt_bool(value: object, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidResource(f"expected a boolean, got {type_name(value)}", field=field)
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def opt_int(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidResource(f"expected an integer, got {type_name(value)}", field=field)
    if not INT64_MIN <= value <= INT64_MAX:
        # Go decodes these fields into int64 (or smaller); msgpack cannot carry more either.
        raise InvalidResource("integer out of range", field=field)
    return value


def opt_float(value: object, field: str) -> float | None:
    """Numbers such as policy ``order``; ints and floats both become float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidResource(f"expected a number, got {type_name(value)}", field=field)
    return float(value)


def str_list(value: object, field: str) -> list[str]:
    items = as_list(value, field)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidResource(
                f"expected a string, got {type_name(item)}", field=f"{field}[{i}]"
            )
    return list(items)


def checked_str_map(value: object, field: str) -> dict[str, str]:
    """A ``map[string]string`` field as it is (not copied, not sorted), once checked."""
    mapping = as_dict(value, field)
    for k, v in mapping.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidResource(
                f"expected string keys and values, got {k!r}: {type_name(v)}", field=field
            )
    return mapping


def str_map(value: object, field: str) -> dict[str, str]:
    """A ``map[string]string`` (labels, annotations), returned sorted by key.

    Sorting makes two semantically equal maps encode to the same bytes.
    """
    mapping = checked_str_map(value, field)
    return {k: mapping[k] for k in sorted(mapping)}


# --- metadata -------------------------------------------------------------------------------------


def metadata(resource: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(resource.get("metadata"), "metadata")


def spec(resource: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(resource.get("spec"), "spec")


def resource_name(resource: Mapping[str, Any]) -> str:
    return req_str(metadata(resource).get("name"), "metadata.name")


def resource_namespace(resource: Mapping[str, Any]) -> str:
    return req_str(metadata(resource).get("namespace"), "metadata.namespace")


def describe(resource: object) -> str:
    """``"Kind ns/name"`` for error messages; never raises."""
    if not isinstance(resource, Mapping):
        return f"<{type_name(resource)}>"
    kind = resource.get("kind") if isinstance(resource.get("kind"), str) else "<no kind>"
    meta = resource.get("metadata") if isinstance(resource.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else "<no name>"
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else ""
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


# --- labels ---------------------------------------------------------------------------------------


def strip_reserved_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Drop ``pcns.``/``pcsa.`` labels: only profiles may set them, or a pod could claim to be
    in another namespace (docs/model.md, "WorkloadEndpoint")."""
    return {
        k: v
        for k, v in labels.items()
        if not k.startswith((NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX))
    }


def sorted_map(mapping: Mapping[str, str]) -> dict[str, str]:
    return {k: mapping[k] for k in sorted(mapping)}


# --- IPs and CIDRs --------------------------------------------------------------------------------


def parse_ip(value: object, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = req_str(value, field)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidResource(f"{text!r} is not an IP address", field=field) from None


def normalize_ip(value: object, field: str) -> str:
    return str(parse_ip(value, field))


def parse_network(
    value: object, field: str, *, strict: bool = False
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR (or a bare IP, read as /32 or /128). Host bits are masked unless ``strict``."""
    text = req_str(value, field)
    try:
        return ipaddress.ip_network(text, strict=strict)
    except ValueError:
        what = "is not a network address (host bits set)" if "/" in text else "is not a CIDR"
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            what = "is not a CIDR"
        raise InvalidResource(f"{text!r} {what}", field=field) from None


def normalize_cidr(value: object, field: str, *, strict: bool = False) -> str:
    return str(parse_network(value, field, strict=strict))


def cidr_list(value: object, field: str) -> list[str]:
    return [normalize_cidr(v, f"{field}[{i}]") for i, v in enumerate(as_list(value, field))]


def ip_version_of(cidr_or_ip: str) -> int:
    return 6 if ":" in cidr_or_ip else 4


def parse_interface(value: object, field: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """An address with an optional prefix length (``10.0.0.11/24``)."""
    text = req_str(value, field)
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidResource(f"{text!r} is not an IP address", field=field) from None


_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def normalize_mac(value: object, field: str) -> str:
    text = req_str(value, field)
    if not _MAC.match(text):
        raise InvalidResource(f"{text!r} is not a MAC address", field=field)
    return text.lower().replace("-", ":")


# --- canonical copies -----------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """A deep copy with every mapping's keys sorted, so equal objects encode identically."""
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if type(value) is int and not INT64_MIN <= value < 2**64:
        # Passed on as it is, so it must fit msgpack (which carries int64 and uint64).
        raise InvalidResource(f"integer out of range: {value}")
    return value


def passthrough_object(resource: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The v3 object as a passthrough ``ResourceKey`` value: canonical key order, apiVersion and
    kind filled in, the resourceVersion removed (see ``PASSTHROUGH_DROPPED_METADATA``)."""
    obj = canonical(resource)
    obj["apiVersion"] = "projectcalico.org/v3"
    obj["kind"] = kind
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for f in PASSTHROUGH_DROPPED_METADATA:
            meta.pop(f, None)
    return canonical(obj)
