"""Policies, tiers and profiles → model keys.

Policy value schema (every key always present, in this order)::

    {"namespace": str ("" for global kinds), "tier": str, "order": float | None,
     "inbound_rules": [rule], "outbound_rules": [rule], "selector": str,
     "untracked": bool, "pre_dnat": bool, "apply_on_forward": bool,
     "types": [str] (as given, [] when none: Felix then applies the policy both ways),
     "performance_hints": [str]}

plus ``"staged_action"`` (``Set``/``Learn``/``Ignore``) for the staged kinds when the spec sets
it; a staged ``Delete`` produces a deletion of the key.
Rules follow ``rules.py``. Keys use the v3.32 form ``/calico/v1/policy/<Kind>/<ns>/<name>``.
"""

from __future__ import annotations

from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    opt_bool,
    opt_float,
    opt_str,
    passthrough_object,
    resource_name,
    resource_namespace,
    spec,
    str_list,
    str_map,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.knp import k8s_policy_spec_to_v3
from typha.sync.convert.rules import convert_rules, default_types, given_types
from typha.sync.convert.selectors import policy_selector

DEFAULT_TIER = "default"

# kind → (namespaced, staged, spec is k8s-shaped)
POLICY_KINDS: dict[str, tuple[bool, bool, bool]] = {
    "NetworkPolicy": (True, False, False),
    "GlobalNetworkPolicy": (False, False, False),
    "KubernetesNetworkPolicy": (True, False, False),
    "StagedNetworkPolicy": (True, True, False),
    "StagedGlobalNetworkPolicy": (False, True, False),
    "StagedKubernetesNetworkPolicy": (True, True, True),
}

_STAGED_ACTIONS = ("Set", "Delete", "Learn", "Ignore")

# Orders and default actions of the tiers Calico creates itself (docs/model.md, "Tier").
WELL_KNOWN_TIERS: dict[str, tuple[float, str]] = {
    "kube-admin": (1_000.0, "Pass"),
    "default": (1_000_000.0, "Deny"),
    "kube-baseline": (10_000_000.0, "Pass"),
}


def _looks_k8s_shaped(s: dict[str, Any]) -> bool:
    return "podSelector" in s or "policyTypes" in s


def policy_updates(resource: dict[str, Any]) -> list[Update]:
    """Any policy kind → one PolicyKey update."""
    kind = resource["kind"]
    namespaced, staged, k8s_shaped = POLICY_KINDS[kind]
    name = resource_name(resource)
    namespace = resource_namespace(resource) if namespaced else ""
    s = spec(resource)
    staged_action = opt_str(s.get("stagedAction"), "spec.stagedAction")
    if staged and staged_action and staged_action not in _STAGED_ACTIONS:
        raise InvalidResource(
            f"must be one of {', '.join(_STAGED_ACTIONS)} (got {staged_action!r})",
            field="spec.stagedAction",
        )
    if k8s_shaped or (kind == "KubernetesNetworkPolicy" and _looks_k8s_shaped(s)):
        s = k8s_policy_spec_to_v3(s)
    key = keys.policy_key(kind, namespace, name)
    value = policy_value(s, namespace=namespace, global_kind=not namespaced)
    if staged:
        if staged_action == "Delete":
            # A staged deletion is not sent to Felix at all (as Calico Typha does).
            return [Update(key, None)]
        if staged_action:
            value["staged_action"] = staged_action  # absent when unset, as Go omits it
    return [Update(key, value)]


def policy_value(s: dict[str, Any], *, namespace: str, global_kind: bool) -> dict[str, Any]:
    """A v3 policy spec → the model Policy value."""
    inbound = convert_rules(s.get("ingress"), namespace, "spec.ingress")
    outbound = convert_rules(s.get("egress"), namespace, "spec.egress")
    # Sent as given; the API's defaulting only decides the preDNAT check below.
    given = given_types(s.get("types"), "spec.types")
    types = default_types(s.get("types"), inbound, outbound, "spec.types")
    untracked = opt_bool(s.get("doNotTrack"), "spec.doNotTrack")
    pre_dnat = opt_bool(s.get("preDNAT"), "spec.preDNAT")
    apply_on_forward = opt_bool(s.get("applyOnForward"), "spec.applyOnForward")
    if not global_kind:
        for f in ("doNotTrack", "preDNAT", "applyOnForward", "namespaceSelector"):
            if s.get(f):
                raise InvalidResource("only valid on global policies", field=f"spec.{f}")
    if untracked and pre_dnat:
        raise InvalidResource("doNotTrack and preDNAT cannot both be set", field="spec.preDNAT")
    if (untracked or pre_dnat) and not apply_on_forward:
        raise InvalidResource(
            "applyOnForward must be true when doNotTrack or preDNAT is set",
            field="spec.applyOnForward",
        )
    if pre_dnat and (outbound or "egress" in types):
        raise InvalidResource("a preDNAT policy cannot have egress rules", field="spec.egress")
    selector = policy_selector(
        opt_str(s.get("selector"), "spec.selector"),
        namespace=namespace,
        namespace_selector=opt_str(s.get("namespaceSelector"), "spec.namespaceSelector"),
        service_account_selector=opt_str(
            s.get("serviceAccountSelector"), "spec.serviceAccountSelector"
        ),
    )
    return {
        "namespace": namespace,
        "tier": opt_str(s.get("tier"), "spec.tier") or DEFAULT_TIER,
        "order": opt_float(s.get("order"), "spec.order"),
        "inbound_rules": inbound,
        "outbound_rules": outbound,
        "selector": selector,
        "untracked": untracked,
        "pre_dnat": pre_dnat,
        "apply_on_forward": apply_on_forward,
        "types": given,
        "performance_hints": str_list(s.get("performanceHints"), "spec.performanceHints"),
    }


def tier_updates(resource: dict[str, Any]) -> list[Update]:
    """Tier → TierKey ``{order, defaultAction}``. Calico's own tiers get their built-in order
    and action when unset; other tiers default to no order (sorts last) and ``Deny``."""
    name = resource_name(resource)
    s = spec(resource)
    known_order, known_action = WELL_KNOWN_TIERS.get(name, (None, "Deny"))
    order = opt_float(s.get("order"), "spec.order")
    action = opt_str(s.get("defaultAction"), "spec.defaultAction") or known_action
    if action not in ("Deny", "Pass"):
        raise InvalidResource(f"must be Deny or Pass (got {action!r})", field="spec.defaultAction")
    value = {"order": order if order is not None else known_order, "defaultAction": action}
    return [Update(keys.tier_key(name), value)]


def profile_updates(resource: dict[str, Any]) -> list[Update]:
    """Profile → ProfileRulesKey ``{inbound_rules, outbound_rules}``, ProfileLabelsKey
    (``labelsToApply``, possibly empty) and, as Calico Typha's felix syncer sends it, the v3
    Profile itself (``profiles/<name>``). Profiles are global: rules get no namespace term."""
    name = resource_name(resource)
    s = spec(resource)
    rules = {
        "inbound_rules": convert_rules(s.get("ingress"), "", "spec.ingress"),
        "outbound_rules": convert_rules(s.get("egress"), "", "spec.egress"),
    }
    labels = str_map(s.get("labelsToApply"), "spec.labelsToApply")
    return [
        Update(keys.profile_rules_key(name), rules),
        Update(keys.profile_labels_key(name), labels),
        Update(keys.resource_key("profiles", name), passthrough_object(resource, "Profile")),
    ]


# The profile libcalico-go's felix syncer always adds (not stored in any datastore): allow-all,
# no labels.  Endpoints may name it; Felix also uses it for host endpoints' default.
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


def default_allow_profile_updates() -> list[Update]:
    """The keys of ``projectcalico-default-allow``: its rules and its v3 Profile (no labels key,
    as Calico Typha sends it)."""
    profile = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": DEFAULT_ALLOW_PROFILE},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
    }
    rules = {"inbound_rules": [{"action": "allow"}], "outbound_rules": [{"action": "allow"}]}
    return [
        # Revision 1, as libcalico-go's felix syncer gives it.
        Update(keys.profile_rules_key(DEFAULT_ALLOW_PROFILE), rules, "1"),
        Update(
            keys.resource_key("profiles", DEFAULT_ALLOW_PROFILE),
            passthrough_object(profile, "Profile"),
            "1",
        ),
    ]
