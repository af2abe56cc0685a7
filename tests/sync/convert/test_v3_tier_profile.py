"""v3 Tier and Profile → Tier, ProfileRules and ProfileLabels keys."""

from __future__ import annotations

import pytest

from tests.sync.convert.helpers import one, res
from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert import (
    InvalidResource,
    v3_to_updates,
)

# --- tiers and profiles ---------------------------------------------------------------------------


def test_tiers() -> None:
    assert one(res("Tier", "default")) == Update(
        "/calico/v1/policy/tier/default/metadata", {"order": 1_000_000.0, "defaultAction": "Deny"}
    )
    assert one(res("Tier", "kube-admin")).value == {"order": 1000.0, "defaultAction": "Pass"}
    assert one(res("Tier", "security", {"order": 10, "defaultAction": "Pass"})).value == {
        "order": 10.0,
        "defaultAction": "Pass",
    }
    assert one(res("Tier", "other")).value == {"order": None, "defaultAction": "Deny"}
    with pytest.raises(InvalidResource, match="defaultAction"):
        v3_to_updates(res("Tier", "x", {"defaultAction": "Allow"}))


def test_profile_rules_and_labels() -> None:
    updates = v3_to_updates(
        res(
            "Profile",
            "kns.web",
            {
                "ingress": [{"action": "Allow"}],
                "egress": [{"action": "Allow", "destination": {"selector": "a == 'b'"}}],
                "labelsToApply": {"pcns.z": "1", "pcns.projectcalico.org/name": "web"},
            },
        )
    )
    assert updates[:2] == [
        Update(
            "/calico/v1/policy/profile/kns.web/rules",
            {
                "inbound_rules": [{"action": "allow"}],
                "outbound_rules": [
                    {"action": "allow", "dst_selector": "a == 'b'", "orig_dst_selector": "a == 'b'"}
                ],
            },
        ),
        Update(
            "/calico/v1/policy/profile/kns.web/labels",
            {"pcns.projectcalico.org/name": "web", "pcns.z": "1"},
        ),
    ]
    assert list(updates[1].value) == ["pcns.projectcalico.org/name", "pcns.z"]
    assert updates[2].key == "/calico/resources/v3/projectcalico.org/profiles/kns.web"
    assert updates[2].value["spec"]["labelsToApply"]["pcns.z"] == "1"
    assert keys.syncer_types_for(updates[2].key) == {keys.SyncerType.FELIX}
