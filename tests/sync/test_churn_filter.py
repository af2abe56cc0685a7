"""The churn filter: which Kubernetes object changes reach the converters."""

from __future__ import annotations

from typing import Any

from tests.k8s.helpers import (
    pod_body,
)
from typha.sync.churn import (
    METADATA_ONLY,
    NO_OP_CONVERSION,
    NOT_FOR_FELIX,
    STATUS_ONLY,
    ChurnFilter,
)
from typha.sync.convert import k8s_to_updates

# === unit: churn filter ========================================================================


def _pod_obj(**changes: Any) -> dict[str, Any]:
    pod = pod_body("ns", "p", "node1", labels={"app": "a"}, ip="10.0.0.1")
    pod["metadata"]["resourceVersion"] = "1"
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    for path, value in changes.items():
        section, _, field_name = path.partition("__")
        pod.setdefault(section, {})[field_name] = value
    return pod


def test_churn_filter_classifies_by_what_changed() -> None:
    churn = ChurnFilter("pods", counter=None)
    base = _pod_obj()
    assert churn.check("ns/p", base, k8s_to_updates(base), force=True)

    def check(obj: dict[str, Any]) -> bool:
        """Is a change from ``base`` to ``obj`` emitted?"""
        churn.check("ns/p", base, k8s_to_updates(base), force=True)
        return churn.check("ns/p", obj, k8s_to_updates(obj))

    assert not check(_pod_obj(status__conditions=[{"type": "Ready", "status": "False"}]))
    assert not check(_pod_obj(metadata__resourceVersion="2", metadata__managedFields=[{"m": 1}]))
    assert not check(_pod_obj(metadata__finalizers=["x"]))
    assert not check(_pod_obj(spec__schedulerName="other"))
    # Positive controls: a label change and an IP change are emitted.
    assert check(_pod_obj(metadata__labels={"app": "b"}))
    assert check(_pod_obj(metadata__annotations={"cni.projectcalico.org/podIP": "10.0.0.2/32"}))
    assert churn.skipped == {STATUS_ONLY: 1, METADATA_ONLY: 2, NO_OP_CONVERSION: 1}

    host = pod_body("ns", "h", "node1", host_network=True)
    assert not churn.check("ns/h", host, k8s_to_updates(host))
    churn.deleted("ns/h", changed_output=False)
    assert churn.skipped[NOT_FOR_FELIX] == 2
    # force (lists) always emits, and forget_except drops what a relist did not see.
    assert churn.check("ns/p", base, k8s_to_updates(base), force=True)
    churn.forget_except({"ns/p"})
    assert len(churn) == 1
