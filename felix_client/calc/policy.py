"""Policy ordering per endpoint (docs/felix-calc.md, "Policy resolution").

``resolve_tiers`` turns "the policies whose selector matches this endpoint" into the ordered tier
list Felix's PolicyResolver computes. (The tests' reference verdict evaluator, which the
rendered rules are cross-checked against, is ``tests/calc/verdict.py``.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from felix_client.calc.model.objects import Action, Policy, PolicyId, Tier

INGRESS = "ingress"
EGRESS = "egress"


@dataclass(frozen=True, slots=True)
class TierInfo:
    """One tier as it applies to one endpoint, with its policies in evaluation order."""

    name: str
    valid: bool
    default_action: Action  # DENY (end-of-tier drop) or PASS
    ingress: tuple[PolicyId, ...]
    egress: tuple[PolicyId, ...]

    def policies(self, direction: str) -> tuple[PolicyId, ...]:
        return self.ingress if direction == INGRESS else self.egress


def tier_sort_key(name: str, tier: Tier | None) -> tuple:
    """Valid tiers by order (missing order last), then name; missing tiers after all valid ones."""
    if tier is None:
        return (1, math.inf, name)
    return (0, math.inf if tier.order is None else tier.order, name)


def policy_sort_key(policy: Policy) -> tuple[float, str]:
    """Order within a tier: ``order`` ascending (missing = +inf), ties by name/namespace/kind."""
    return (math.inf if policy.order is None else policy.order, policy.id.sort_name)


def applies_to_workloads(policy: Policy) -> bool:
    """Staged policies are never enforced; untracked and pre-DNAT policies only apply to host
    endpoints, which this client does not program."""
    return not (policy.id.staged or policy.untracked or policy.pre_dnat)


def resolve_tiers(policies: Iterable[Policy], tiers: Mapping[str, Tier]) -> tuple[TierInfo, ...]:
    """Ordered tiers for an endpoint given the policies that match it."""
    by_tier: dict[str, list[Policy]] = {}
    for policy in policies:
        if applies_to_workloads(policy):
            by_tier.setdefault(policy.tier, []).append(policy)
    out = []
    for name in sorted(by_tier, key=lambda n: tier_sort_key(n, tiers.get(n))):
        tier = tiers.get(name)
        ordered = sorted(by_tier[name], key=policy_sort_key)
        ingress = tuple(p.id for p in ordered if p.ingress)
        egress = tuple(p.id for p in ordered if p.egress)
        if not ingress and not egress:
            continue
        out.append(
            TierInfo(
                name=name,
                valid=tier is not None,
                default_action=tier.default_action if tier is not None else Action.DENY,
                ingress=ingress,
                egress=egress,
            )
        )
    return tuple(out)
