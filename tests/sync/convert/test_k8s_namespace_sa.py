"""Kubernetes Namespaces and ServiceAccounts → v3 Profiles → profile keys."""

from __future__ import annotations

from typing import Any

from tests.sync.convert.helpers import mutate, packed
from typha.sync.base import Update
from typha.sync.convert import (
    k8s_to_updates,
    namespace_to_profile,
    service_account_to_profile,
)
from typha.sync.convert.k8s import derived_uid

# --- Namespaces, service accounts -----------------------------------------------------------------

NAMESPACE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {
        "name": "web",
        "labels": {"team": "frontend", "kubernetes.io/metadata.name": "web"},
        "resourceVersion": "5",
        "managedFields": [],
    },
    "spec": {"finalizers": ["kubernetes"]},
    "status": {"phase": "Active"},
}


def test_namespace_to_profile() -> None:
    assert namespace_to_profile(NAMESPACE) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "kns.web"},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {
                "pcns.kubernetes.io/metadata.name": "web",
                "pcns.projectcalico.org/name": "web",
                "pcns.team": "frontend",
            },
        },
    }
    updates = k8s_to_updates(NAMESPACE)
    # The v3 Profile itself goes to the felix syncer too, as Calico Typha sends it.
    assert updates[2] == Update(
        "/calico/resources/v3/projectcalico.org/profiles/kns.web",
        namespace_to_profile(NAMESPACE),
    )
    assert updates[:2] == [
        Update(
            "/calico/v1/policy/profile/kns.web/rules",
            {"inbound_rules": [{"action": "allow"}], "outbound_rules": [{"action": "allow"}]},
        ),
        Update(
            "/calico/v1/policy/profile/kns.web/labels",
            {
                "pcns.kubernetes.io/metadata.name": "web",
                "pcns.projectcalico.org/name": "web",
                "pcns.team": "frontend",
            },
        ),
    ]
    churned = mutate(
        NAMESPACE,
        lambda n: (
            n["metadata"].update(resourceVersion="6"),
            n["status"].update(phase="Terminating"),
        ),
    )
    assert packed(k8s_to_updates(churned)) == packed(k8s_to_updates(NAMESPACE))


def test_service_account_to_profile() -> None:
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "api", "namespace": "web", "labels": {"role": "backend"}},
        "secrets": [{"name": "api-token-xyz"}],
    }
    assert service_account_to_profile(sa) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "ksa.web.api"},
        "spec": {"labelsToApply": {"pcsa.projectcalico.org/name": "api", "pcsa.role": "backend"}},
    }
    # With a uid and creation time (what the apiserver sets), the profile carries both.
    # The profile's uid is derived from the account's (bits of each byte reversed, version and
    # variant bytes kept), as Calico's Kubernetes backend does; values seen from Calico Typha.
    stamped = mutate(
        sa,
        lambda s: s["metadata"].update(
            uid="a8d20564-be87-41ec-8753-2a0e0eb4a222", creationTimestamp="2026-01-01T00:00:00Z"
        ),
    )
    assert service_account_to_profile(stamped)["metadata"] == {
        "name": "ksa.web.api",
        "uid": "154ba026-7de1-4137-87ca-5470702d4544",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    assert derived_uid("e925d60f-3534-4aa3-b405-07f50cae21d3") == (
        "97a46bf0-ac2c-4ac5-b4a0-e0af307584cb"
    )
    assert derived_uid("not-a-uuid") is None
    assert k8s_to_updates(sa)[:2] == [
        Update(
            "/calico/v1/policy/profile/ksa.web.api/rules",
            {"inbound_rules": [], "outbound_rules": []},
        ),
        Update(
            "/calico/v1/policy/profile/ksa.web.api/labels",
            {"pcsa.projectcalico.org/name": "api", "pcsa.role": "backend"},
        ),
    ]
