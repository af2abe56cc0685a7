"""Kubernetes NetworkPolicy spec → v3 policy spec (docs/model.md, "Kubernetes datastore mapping").

Used for networking.k8s.io/v1 NetworkPolicy (KDD) and for the k8s-shaped spec of v3
``StagedKubernetesNetworkPolicy``. The result is a v3 NetworkPolicy spec (``tier``, ``order``,
``selector``, ``types``, ``ingress``, ``egress``); the namespace term is added later by the v3
policy conversion, exactly as for any namespaced policy.
"""

from __future__ import annotations

from typing import Any

from typha.sync.convert._common import (
    ORCHESTRATOR_LABEL,
    as_dict,
    as_list,
    normalize_cidr,
    opt_int,
    opt_str,
    str_list,
    type_name,
)
from typha.sync.convert.errors import InvalidResource

KNP_TIER = "default"
KNP_ORDER = 1000.0
_ORCHESTRATOR_TERM = f"{ORCHESTRATOR_LABEL} == 'k8s'"
_K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")


def label_selector_terms(selector: object, field: str) -> list[str]:
    """A metav1.LabelSelector as Calico selector terms: sorted matchLabels as ``k == 'v'``, then
    matchExpressions in order (In/NotIn/Exists/DoesNotExist)."""
    sel = as_dict(selector, field)
    terms: list[str] = []
    match_labels = as_dict(sel.get("matchLabels"), f"{field}.matchLabels")
    for key in sorted(match_labels):
        value = match_labels[key]
        if not isinstance(value, str):
            raise InvalidResource(
                f"label value must be a string, got {type_name(value)}",
                field=f"{field}.matchLabels.{key}",
            )
        terms.append(f"{key} == '{value}'")
    for i, expr in enumerate(as_list(sel.get("matchExpressions"), f"{field}.matchExpressions")):
        efield = f"{field}.matchExpressions[{i}]"
        expr = as_dict(expr, efield)
        key = opt_str(expr.get("key"), f"{efield}.key")
        if not key:
            raise InvalidResource("required", field=f"{efield}.key")
        op = opt_str(expr.get("operator"), f"{efield}.operator")
        values = str_list(expr.get("values"), f"{efield}.values")
        if op in ("In", "NotIn"):
            if not values:
                raise InvalidResource(f"operator {op} needs values", field=f"{efield}.values")
            joined = "', '".join(values)
            word = "in" if op == "In" else "not in"
            terms.append(f"{key} {word} {{ '{joined}' }}")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                raise InvalidResource(f"operator {op} takes no values", field=f"{efield}.values")
            terms.append(f"has({key})" if op == "Exists" else f"! has({key})")
        else:
            raise InvalidResource(
                f"operator must be In, NotIn, Exists or DoesNotExist (got {op!r})",
                field=f"{efield}.operator",
            )
    return terms


def pod_selector(selector: object, field: str) -> str:
    """podSelector → ``projectcalico.org/orchestrator == 'k8s' && <terms>``."""
    return " && ".join([_ORCHESTRATOR_TERM, *label_selector_terms(selector, field)])


def namespace_selector(selector: object, field: str) -> str:
    """namespaceSelector → its terms; ``{}`` selects every namespace, i.e. ``all()``."""
    return " && ".join(label_selector_terms(selector, field)) or "all()"


def _peer(peer: object, field: str) -> dict[str, Any]:
    peer = as_dict(peer, field)
    block = peer.get("ipBlock")
    if block is not None:
        if peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None:
            raise InvalidResource("ipBlock cannot be combined with selectors", field=field)
        block = as_dict(block, f"{field}.ipBlock")
        entity: dict[str, Any] = {
            "nets": [normalize_cidr(block.get("cidr"), f"{field}.ipBlock.cidr")]
        }
        excepts = [
            normalize_cidr(c, f"{field}.ipBlock.except[{i}]")
            for i, c in enumerate(as_list(block.get("except"), f"{field}.ipBlock.except"))
        ]
        if excepts:
            entity["notNets"] = excepts
        return entity
    if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
        raise InvalidResource("a peer needs ipBlock, podSelector or namespaceSelector", field=field)
    # A Kubernetes peer always selects pods: without a podSelector it is still the
    # orchestrator term (as Calico converts it), within the namespaces selected.
    entity: dict[str, Any] = {
        "selector": pod_selector(peer.get("podSelector") or {}, f"{field}.podSelector")
    }
    if peer.get("namespaceSelector") is not None:
        entity["namespaceSelector"] = namespace_selector(
            peer["namespaceSelector"], f"{field}.namespaceSelector"
        )
    return entity


def _squash(intervals: list[tuple[int, int]]) -> list[int | str]:
    """Merge overlapping/adjacent port intervals: 80, 81, 82 → ``"80:82"``."""
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [lo if lo == hi else f"{lo}:{hi}" for lo, hi in merged]


def _port_groups(ports: object, field: str) -> list[tuple[str, list[int | str]] | None]:
    """k8s ports → one (protocol, ports) group per protocol in first-seen order; ``[None]`` when
    any protocol and port is allowed. An empty port list means every port of that protocol."""
    entries = as_list(ports, field)
    if not entries:
        return [None]
    order: list[str] = []
    numeric: dict[str, list[tuple[int, int]]] = {}
    named: dict[str, list[str]] = {}
    all_ports: set[str] = set()
    for i, entry in enumerate(entries):
        pfield = f"{field}[{i}]"
        entry = as_dict(entry, pfield)
        proto_raw = entry.get("protocol")
        port = entry.get("port")
        end_port = opt_int(entry.get("endPort"), f"{pfield}.endPort")
        if proto_raw is None and port is None and end_port is None:
            return [None]  # an empty port struct: any protocol, any port
        proto = opt_str(proto_raw, f"{pfield}.protocol").upper() or "TCP"
        if proto not in _K8S_PROTOCOLS:
            raise InvalidResource(
                f"protocol must be TCP, UDP or SCTP (got {proto_raw!r})", field=f"{pfield}.protocol"
            )
        if proto not in numeric:
            order.append(proto)
            numeric[proto] = []
            named[proto] = []
        if port is None:
            if end_port is not None:
                raise InvalidResource("endPort needs a numeric port", field=f"{pfield}.endPort")
            all_ports.add(proto)
            continue
        if isinstance(port, str) and not port.isdigit():
            if end_port is not None:
                raise InvalidResource("endPort needs a numeric port", field=f"{pfield}.endPort")
            if port not in named[proto]:
                named[proto].append(port)
            continue
        if isinstance(port, bool) or not isinstance(port, int | str):
            raise InvalidResource(f"expected a port, got {type_name(port)}", field=f"{pfield}.port")
        lo = int(port)
        hi = end_port if end_port is not None else lo
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
            raise InvalidResource(f"bad port range {lo}..{hi}", field=pfield)
        numeric[proto].append((lo, hi))
    groups: list[tuple[str, list[int | str]] | None] = []
    for proto in order:
        groups.append(
            (proto, [] if proto in all_ports else [*_squash(numeric[proto]), *named[proto]])
        )
    return groups


def _rules(k8s_rules: object, direction: str, field: str) -> list[dict[str, Any]]:
    peer_key = "from" if direction == "ingress" else "to"
    out: list[dict[str, Any]] = []
    for i, k8s_rule in enumerate(as_list(k8s_rules, field)):
        rfield = f"{field}[{i}]"
        k8s_rule = as_dict(k8s_rule, rfield)
        peers_raw = as_list(k8s_rule.get(peer_key), f"{rfield}.{peer_key}")
        peers: list[dict[str, Any] | None] = [
            _peer(p, f"{rfield}.{peer_key}[{j}]") for j, p in enumerate(peers_raw)
        ] or [None]
        groups = _port_groups(k8s_rule.get("ports"), f"{rfield}.ports")
        for peer in peers:
            for group in groups:
                rule: dict[str, Any] = {"action": "Allow"}
                ports: list[int | str] = []
                if group is not None:
                    rule["protocol"] = group[0]
                    ports = group[1]
                if direction == "ingress":
                    if peer:
                        rule["source"] = dict(peer)
                    if ports:
                        rule["destination"] = {"ports": list(ports)}
                else:
                    dest = dict(peer or {})
                    if ports:
                        dest["ports"] = list(ports)
                    if dest:
                        rule["destination"] = dest
                out.append(rule)
    return out


def k8s_policy_spec_to_v3(spec: object, field: str = "spec") -> dict[str, Any]:
    """A k8s NetworkPolicy spec → a v3 policy spec in tier ``default``, order 1000.

    Types come from ``policyTypes``, default ``[Ingress]``; rules of a direction not in the
    types are dropped (Felix would ignore them anyway).
    """
    spec = as_dict(spec, field)
    if "podSelector" not in spec:
        raise InvalidResource("required", field=f"{field}.podSelector")
    types = str_list(spec.get("policyTypes"), f"{field}.policyTypes") or ["Ingress"]
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            raise InvalidResource(
                f"must be Ingress or Egress (got {t!r})", field=f"{field}.policyTypes[{i}]"
            )
    ingress = _rules(spec.get("ingress"), "ingress", f"{field}.ingress")
    egress = _rules(spec.get("egress"), "egress", f"{field}.egress")
    return {
        "tier": KNP_TIER,
        "order": KNP_ORDER,
        "selector": pod_selector(spec.get("podSelector"), f"{field}.podSelector"),
        "types": [t for t in ("Ingress", "Egress") if t in types],
        "ingress": ingress if "Ingress" in types else [],
        "egress": egress if "Egress" in types else [],
    }
