"""v3 rules → model rules (the value schema Felix's calculation graph consumes).

Model rule schema (libcalico-go ``model.Rule`` JSON names, negations prefixed ``!``). Keys appear
in exactly this order and only when set — an absent key means "no constraint":

==========================  =====================================================================
``action``                  always: ``"allow"``, ``"deny"``, ``"log"`` or ``"next-tier"`` (v3 Pass)
``ip_version``              ``4`` or ``6``
``protocol``                ``"tcp"``, ``"udp"``, ``"icmp"``, ``"icmpv6"``, ``"sctp"``,
                            ``"udplite"`` or an int 1-255
``!protocol``               same forms
``icmp_type``/``icmp_code``            ints (code only with a type)
``!icmp_type``/``!icmp_code``          ints
``src_nets``                [CIDR] (host bits masked; a bare IP becomes /32 or /128)
``src_selector``            selector, fully rewritten (namespace terms, ``pcns.``/``pcsa.``)
``src_ports``               [int | ``"min:max"`` | named-port string]
``src_service``             service name (v3 ``services`` match, passed through)
``src_service_ns``          its namespace, as given
``dst_nets`` … ``dst_service_ns``   same for the destination
``!src_nets``, ``!src_selector``, ``!src_ports``
``!dst_nets``, ``!dst_selector``, ``!dst_ports``
``orig_src_selector``, ``orig_src_namespace_selector``, ``orig_dst_selector``,
``orig_dst_namespace_selector``, ``!orig_src_selector``, ``!orig_dst_selector``,
``orig_src_service_acct_names``, ``orig_src_service_acct_selector``, ``orig_dst_…``
                            the v3 criteria unchanged (Felix reports them; it matches on the
                            combined selectors above)
``http``                    ``{"methods": [str], "paths": [{"exact"|"prefix": str}]}``
``metadata``                ``{"annotations": {str: str}}`` (the rule's own metadata)
==========================  =====================================================================

The names are exactly libcalico-go's: a Go client silently drops a key it does not know.
``!*_selector`` is the v3 ``notSelector`` passed through unchanged (it is not namespace-scoped;
docs/model.md, "Rule"). Named ports stay inside the ports lists; Felix turns them into named-port
ipsets itself.
"""

from __future__ import annotations

from typing import Any

from typha.sync.convert._common import (
    as_dict,
    as_list,
    cidr_list,
    ip_version_of,
    opt_int,
    opt_str,
    str_list,
    str_map,
    type_name,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.selectors import check_selector, entity_selector

_ACTIONS = {"allow": "allow", "deny": "deny", "log": "log", "pass": "next-tier"}
_PROTOCOL_NAMES = {
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
    "icmpv6": "icmpv6",
    "sctp": "sctp",
    "udplite": "udplite",
}
# Protocols that have ports (by name or IANA number).
_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", 6, 17, 132})
_ICMP_PROTOCOLS = frozenset({"icmp", "icmpv6", 1, 58})


def normalize_protocol(value: object, field: str) -> str | int | None:
    """``"TCP"`` → ``"tcp"``; ``"6"``/``6`` → ``6``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidResource(f"expected a protocol, got {type_name(value)}", field=field)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise InvalidResource(f"protocol number {value} is not in 1-255", field=field)
        return value
    if isinstance(value, str):
        name = _PROTOCOL_NAMES.get(value.lower())
        if name is None:
            raise InvalidResource(f"unknown protocol {value!r}", field=field)
        return name
    raise InvalidResource(f"expected a protocol, got {type_name(value)}", field=field)


def _port_number(text: str, field: str) -> int:
    n = int(text)
    if not 0 <= n <= 65535:
        raise InvalidResource(f"port {n} is not in 0-65535", field=field)
    return n


def normalize_port(value: object, field: str) -> int | str:
    """One v3 port: ``80``/``"80"`` → ``80``; ``"80:90"`` → ``"80:90"`` (``"80:80"`` → ``80``);
    any other string is a named port."""
    if isinstance(value, bool):
        raise InvalidResource(f"expected a port, got {type_name(value)}", field=field)
    if isinstance(value, int):
        return _port_number(str(value), field)
    if not isinstance(value, str) or not value:
        raise InvalidResource(f"expected a port, got {value!r}", field=field)
    if value.isdigit():
        return _port_number(value, field)
    if ":" in value:
        lo, _, hi = value.partition(":")
        if not (lo.isdigit() and hi.isdigit()):
            raise InvalidResource(f"{value!r} is not a port range", field=field)
        a, b = _port_number(lo, field), _port_number(hi, field)
        if a > b:
            raise InvalidResource(f"port range {value!r} has min > max", field=field)
        return a if a == b else f"{a}:{b}"
    if len(value) > 128 or any(c in value for c in " \t,"):
        raise InvalidResource(f"{value!r} is not a valid named port", field=field)
    return value


def _ports(value: object, field: str) -> list[int | str]:
    return [normalize_port(p, f"{field}[{i}]") for i, p in enumerate(as_list(value, field))]


def _entity(
    entity: dict[str, Any],
    side: str,
    namespace: str,
    field: str,
    out: dict[str, Any],
    orig: dict[str, Any],
) -> dict[str, Any]:
    """Fill ``src_*``/``dst_*`` fields into ``out`` and the ``orig_*`` ones into ``orig``;
    return the negated ones for later."""
    nets = cidr_list(entity.get("nets"), f"{field}.nets")
    not_nets = cidr_list(entity.get("notNets"), f"{field}.notNets")
    selector = check_selector(
        opt_str(entity.get("selector"), f"{field}.selector"), f"{field}.selector"
    )
    not_selector = check_selector(
        opt_str(entity.get("notSelector"), f"{field}.notSelector"), f"{field}.notSelector"
    )
    ns_selector = check_selector(
        opt_str(entity.get("namespaceSelector"), f"{field}.namespaceSelector"),
        f"{field}.namespaceSelector",
    )
    sa = as_dict(entity.get("serviceAccounts"), f"{field}.serviceAccounts")
    sa_names = str_list(sa.get("names"), f"{field}.serviceAccounts.names")
    sa_selector = check_selector(
        opt_str(sa.get("selector"), f"{field}.serviceAccounts.selector"),
        f"{field}.serviceAccounts.selector",
    )
    services = as_dict(entity.get("services"), f"{field}.services")
    ports = _ports(entity.get("ports"), f"{field}.ports")
    not_ports = _ports(entity.get("notPorts"), f"{field}.notPorts")

    # The v3 match criteria unchanged, next to the combined selector (libcalico-go's orig_*).
    originals = {
        f"orig_{side}_selector": selector,
        f"orig_{side}_namespace_selector": ns_selector,
        f"!orig_{side}_selector": not_selector,
        f"orig_{side}_service_acct_names": sa_names,
        f"orig_{side}_service_acct_selector": sa_selector,
    }
    orig.update({k: v for k, v in originals.items() if v})
    sel = entity_selector(
        selector=selector,
        not_selector=not_selector,
        namespace_selector=ns_selector,
        sa_names=sa_names,
        sa_selector=sa_selector,
        policy_namespace=namespace,
        field=field,
    )
    if nets:
        out[f"{side}_nets"] = nets
    if sel:
        out[f"{side}_selector"] = sel
    if ports:
        out[f"{side}_ports"] = ports
    service = opt_str(services.get("name"), f"{field}.services.name")
    if service:
        out[f"{side}_service"] = service
        # As given (libcalico-go does not default it to the policy's namespace).
        svc_ns = opt_str(services.get("namespace"), f"{field}.services.namespace")
        if svc_ns:
            out[f"{side}_service_ns"] = svc_ns
    negated: dict[str, Any] = {}
    if not_nets:
        negated[f"!{side}_nets"] = not_nets
    if not_selector:
        negated[f"!{side}_selector"] = not_selector
    if not_ports:
        negated[f"!{side}_ports"] = not_ports
    return negated


def _icmp(value: object, field: str) -> tuple[int | None, int | None]:
    icmp = as_dict(value, field)
    icmp_type = opt_int(icmp.get("type"), f"{field}.type")
    icmp_code = opt_int(icmp.get("code"), f"{field}.code")
    if icmp_code is not None and icmp_type is None:
        raise InvalidResource("an ICMP code needs an ICMP type", field=f"{field}.code")
    if icmp_type is not None and not 0 <= icmp_type <= 254:
        raise InvalidResource(f"ICMP type {icmp_type} is not in 0-254", field=f"{field}.type")
    if icmp_code is not None and not 0 <= icmp_code <= 255:
        raise InvalidResource(f"ICMP code {icmp_code} is not in 0-255", field=f"{field}.code")
    return icmp_type, icmp_code


def _http(value: object, field: str) -> dict[str, Any] | None:
    http = as_dict(value, field)
    if not http:
        return None
    methods = str_list(http.get("methods"), f"{field}.methods")
    paths = []
    for i, p in enumerate(as_list(http.get("paths"), f"{field}.paths")):
        p = as_dict(p, f"{field}.paths[{i}]")
        if len(p) != 1 or next(iter(p)) not in ("exact", "prefix"):
            raise InvalidResource(
                "a path match is exactly one of exact/prefix", field=f"{field}.paths[{i}]"
            )
        key = next(iter(p))
        paths.append({key: opt_str(p[key], f"{field}.paths[{i}].{key}")})
    return {"methods": methods, "paths": paths}


# libcalico-go's field order of the original-criteria fields.
_ORIG_ORDER = (
    "orig_src_selector",
    "orig_src_namespace_selector",
    "orig_dst_selector",
    "orig_dst_namespace_selector",
    "!orig_src_selector",
    "!orig_dst_selector",
    "orig_src_service_acct_names",
    "orig_src_service_acct_selector",
    "orig_dst_service_acct_names",
    "orig_dst_service_acct_selector",
)


def convert_rule(rule: object, namespace: str, field: str) -> dict[str, Any]:
    """One v3 rule → one model rule. ``namespace`` is the policy's ("" for global kinds)."""
    rule = as_dict(rule, field)
    action_text = opt_str(rule.get("action"), f"{field}.action")
    action = _ACTIONS.get(action_text.lower())
    if action is None:
        raise InvalidResource(
            f"action must be one of Allow, Deny, Log, Pass (got {action_text!r})",
            field=f"{field}.action",
        )
    out: dict[str, Any] = {"action": action}

    ip_version = opt_int(rule.get("ipVersion"), f"{field}.ipVersion")
    if ip_version is not None:
        if ip_version not in (4, 6):
            raise InvalidResource(
                f"ipVersion must be 4 or 6 (got {ip_version})", field=f"{field}.ipVersion"
            )
        out["ip_version"] = ip_version
    protocol = normalize_protocol(rule.get("protocol"), f"{field}.protocol")
    if protocol is not None:
        out["protocol"] = protocol
    not_protocol = normalize_protocol(rule.get("notProtocol"), f"{field}.notProtocol")
    if not_protocol is not None:
        out["!protocol"] = not_protocol

    icmp_type, icmp_code = _icmp(rule.get("icmp"), f"{field}.icmp")
    not_icmp_type, not_icmp_code = _icmp(rule.get("notICMP"), f"{field}.notICMP")
    if (icmp_type is not None or not_icmp_type is not None) and protocol not in _ICMP_PROTOCOLS:
        raise InvalidResource(
            "icmp/notICMP need protocol ICMP or ICMPv6", field=f"{field}.protocol"
        )
    for key, val in (
        ("icmp_type", icmp_type),
        ("icmp_code", icmp_code),
        ("!icmp_type", not_icmp_type),
        ("!icmp_code", not_icmp_code),
    ):
        if val is not None:
            out[key] = val

    orig: dict[str, Any] = {}
    negated = _entity(
        as_dict(rule.get("source"), f"{field}.source"),
        "src",
        namespace,
        f"{field}.source",
        out,
        orig,
    )
    negated |= _entity(
        as_dict(rule.get("destination"), f"{field}.destination"),
        "dst",
        namespace,
        f"{field}.destination",
        out,
        orig,
    )
    out.update(negated)
    out.update(sorted(orig.items(), key=lambda kv: _ORIG_ORDER.index(kv[0])))
    http = _http(rule.get("http"), f"{field}.http")
    if http is not None:
        out["http"] = http
    meta = as_dict(rule.get("metadata"), f"{field}.metadata")
    if meta.get("annotations") is not None:
        annotations = str_map(meta["annotations"], f"{field}.metadata.annotations")
        out["metadata"] = (
            {"annotations": {k: annotations[k] for k in sorted(annotations)}} if annotations else {}
        )

    _check_ports_have_protocol(out, protocol, field)
    _check_nets_version(out, ip_version, field)
    return out


def _check_ports_have_protocol(out: dict[str, Any], protocol: str | int | None, field: str) -> None:
    has_ports = any(k in out for k in ("src_ports", "dst_ports", "!src_ports", "!dst_ports"))
    if has_ports and protocol not in _PORT_PROTOCOLS:
        raise InvalidResource(
            "ports are only valid with protocol TCP, UDP or SCTP", field=f"{field}.protocol"
        )


def _check_nets_version(out: dict[str, Any], ip_version: int | None, field: str) -> None:
    if ip_version is None:
        return
    for key in ("src_nets", "dst_nets", "!src_nets", "!dst_nets"):
        for net in out.get(key, ()):
            if ip_version_of(net) != ip_version:
                raise InvalidResource(
                    f"{net} does not match ipVersion {ip_version}", field=f"{field}.ipVersion"
                )


def convert_rules(rules: object, namespace: str, field: str) -> list[dict[str, Any]]:
    return [
        convert_rule(r, namespace, f"{field}[{i}]") for i, r in enumerate(as_list(rules, field))
    ]


def given_types(types: object, field: str) -> list[str]:
    """The policy's own ``types``, lower-case, in the given order (empty when none), as
    libcalico-go's policy processors pass them on: the defaulting below is the v3 API's (done
    when a client writes the policy), and Felix reads no types as "ingress and egress"."""
    given = str_list(types, field)
    for i, t in enumerate(given):
        if t.lower() not in ("ingress", "egress"):
            raise InvalidResource(
                f"type must be Ingress or Egress (got {t!r})", field=f"{field}[{i}]"
            )
    return [t.lower() for t in given]


def default_types(types: object, ingress: list[Any], egress: list[Any], field: str) -> list[str]:
    """Policy types, lower-case, ingress before egress (Calico's v3 API defaulting;
    docs/model.md, "Policy"):
    none given → ``[ingress]`` unless there are egress rules only (``[egress]``) or both kinds
    (``[ingress, egress]``)."""
    given = str_list(types, field)
    if not given:
        if egress and not ingress:
            return ["egress"]
        if egress:
            return ["ingress", "egress"]
        return ["ingress"]
    seen = set()
    for i, t in enumerate(given):
        low = t.lower()
        if low not in ("ingress", "egress"):
            raise InvalidResource(
                f"type must be Ingress or Egress (got {t!r})", field=f"{field}[{i}]"
            )
        seen.add(low)
    return [t for t in ("ingress", "egress") if t in seen]
