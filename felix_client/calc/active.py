"""Which policies and profiles are active on this node (Felix's ActiveRulesCalculator).

Every policy selector is indexed against the *local* endpoints only. A policy is active while it
matches at least one local endpoint; a profile is active while a local endpoint lists it. The
calculator reports activity changes and the local endpoints whose policy list may have changed,
so remote-only policies cost nothing beyond selector indexing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from felix_client.calc import selector as sel
from felix_client.calc.labelindex import LabelIndex
from felix_client.calc.model.objects import Policy, PolicyId
from felix_client.calc.policy import applies_to_workloads

PolicyCallback = Callable[[PolicyId, bool], None]
ProfileCallback = Callable[[str, bool], None]
EndpointCallback = Callable[[str], None]


class ActiveRulesCalculator:
    """Tracks active policies/profiles and policy↔local-endpoint matches.

    Callbacks: ``on_policy(pid, active)`` on activation, deactivation and on any update of a
    policy that stays active; ``on_profile(name, active)``; ``on_endpoint_dirty(eid)`` when a local
    endpoint's policy list or any policy in it may have changed.
    """

    def __init__(
        self,
        on_policy: PolicyCallback,
        on_profile: ProfileCallback,
        on_endpoint_dirty: EndpointCallback,
    ) -> None:
        self._on_policy = on_policy
        self._on_profile = on_profile
        self._on_endpoint_dirty = on_endpoint_dirty
        self._index = LabelIndex(self._match_started, self._match_stopped)
        self._policies: dict[PolicyId, Policy] = {}
        self._policy_uid: dict[PolicyId, str] = {}
        self._uid_policies: dict[str, set[PolicyId]] = {}
        self._active: set[PolicyId] = set()
        self._profile_refs: dict[str, int] = {}
        self._endpoint_profiles: dict[str, tuple[str, ...]] = {}

    # --- queries ---------------------------------------------------------------------------------

    def is_active(self, pid: PolicyId) -> bool:
        return pid in self._active

    def active_policies(self) -> set[PolicyId]:
        return set(self._active)

    def active_profiles(self) -> set[str]:
        return set(self._profile_refs)

    def policies_for(self, eid: str) -> list[Policy]:
        """Policies whose selector matches local endpoint ``eid``."""
        out = []
        for uid in self._index.selectors_matching(eid):
            for pid in self._uid_policies.get(uid, ()):
                out.append(self._policies[pid])
        return out

    def endpoints_for(self, pid: PolicyId) -> set[str]:
        uid = self._policy_uid.get(pid)
        return set(self._index.matches(uid)) if uid else set()

    def local_endpoints(self) -> list[str]:
        return list(self._index.items())

    # --- policies --------------------------------------------------------------------------------

    def update_policy(self, pid: PolicyId, policy: Policy | None) -> None:
        """Add, update or (with ``None``) remove a policy."""
        was_active = pid in self._active
        old_uid = self._policy_uid.get(pid)
        new_selector: sel.Selector | None = None
        if policy is not None and applies_to_workloads(policy):
            try:
                new_selector = sel.parse(policy.selector)
            except sel.SelectorParseError:
                new_selector = None  # an unparseable selector matches nothing
        new_uid = new_selector.uid if new_selector is not None else None
        if policy is None:
            self._policies.pop(pid, None)
        else:
            self._policies[pid] = policy
        # Endpoints matched before or after may see a different order/tier/rule set.
        if old_uid is not None:
            for eid in self._index.matches(old_uid):
                self._on_endpoint_dirty(eid)
        if old_uid != new_uid:
            if old_uid is not None:
                del self._policy_uid[pid]
                members = self._uid_policies[old_uid]
                members.discard(pid)
                if not members:
                    del self._uid_policies[old_uid]
                    self._index.remove_selector(old_uid)
            if new_uid is not None:
                assert new_selector is not None
                self._policy_uid[pid] = new_uid
                members = self._uid_policies.get(new_uid)
                if members is None:
                    self._uid_policies[new_uid] = {pid}
                    self._index.update_selector(new_uid, new_selector)
                else:
                    members.add(pid)
                    for eid in self._index.matches(new_uid):
                        self._on_endpoint_dirty(eid)
        self._sync_active(pid)
        if was_active and pid in self._active:
            self._on_policy(pid, True)  # content update of a policy that stays active

    def _sync_active(self, pid: PolicyId) -> None:
        uid = self._policy_uid.get(pid)
        wanted = uid is not None and bool(self._index.matches(uid))
        if wanted and pid not in self._active:
            self._active.add(pid)
            self._on_policy(pid, True)
        elif not wanted and pid in self._active:
            self._active.discard(pid)
            self._on_policy(pid, False)

    def _match_started(self, uid: object, eid: object) -> None:
        self._on_endpoint_dirty(eid)  # type: ignore[arg-type]
        if len(self._index.matches(uid)) == 1:
            for pid in list(self._uid_policies.get(uid, ())):  # type: ignore[arg-type]
                self._sync_active(pid)

    def _match_stopped(self, uid: object, eid: object) -> None:
        self._on_endpoint_dirty(eid)  # type: ignore[arg-type]
        if not self._index.matches(uid):
            for pid in list(self._uid_policies.get(uid, ())):  # type: ignore[arg-type]
                self._sync_active(pid)

    # --- local endpoints and profiles ------------------------------------------------------------

    def update_endpoint(
        self, eid: str, labels: Mapping[str, str], profile_ids: tuple[str, ...]
    ) -> None:
        """Add or update a local endpoint."""
        old_profiles = self._endpoint_profiles.get(eid, ())
        self._endpoint_profiles[eid] = profile_ids
        for name in profile_ids:
            self._ref_profile(name, +1)
        for name in old_profiles:
            self._ref_profile(name, -1)
        self._index.update_item(eid, labels, profile_ids)
        self._on_endpoint_dirty(eid)

    def remove_endpoint(self, eid: str) -> None:
        if eid not in self._endpoint_profiles:
            return
        self._index.remove_item(eid)
        for name in self._endpoint_profiles.pop(eid):
            self._ref_profile(name, -1)
        self._on_endpoint_dirty(eid)

    def update_profile_labels(self, name: str, labels: Mapping[str, str] | None) -> None:
        self._index.update_parent_labels(name, labels)

    def _ref_profile(self, name: str, delta: int) -> None:
        count = self._profile_refs.get(name, 0) + delta
        if count > 0:
            self._profile_refs[name] = count
            if count == delta:
                self._on_profile(name, True)
        else:
            self._profile_refs.pop(name, None)
            self._on_profile(name, False)
