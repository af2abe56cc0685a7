"""Kubeconfig files and in-cluster service-account configuration."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from typha.k8s.kubeconfig import KubeConfig, KubeConfigError

# === unit: kubeconfig ===========================================================================


def test_kubeconfig_files_merge_relative_paths_and_inline_data(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("typha-client")
    ca_pem = ca.cert_pem.bytes()
    first = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "inline",
        "clusters": [
            {
                "name": "c1",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": "u1",
                "user": {
                    "client-certificate-data": base64.b64encode(
                        cert.cert_chain_pems[0].bytes()
                    ).decode(),
                    "client-key-data": base64.b64encode(cert.private_key_pem.bytes()).decode(),
                },
            }
        ],
        "contexts": [{"name": "inline", "context": {"cluster": "c1", "user": "u1"}}],
    }
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ca.crt").write_bytes(ca_pem)
    (tmp_path / "sub" / "token").write_text("tok-from-file\n")
    second = {
        "current-context": "ignored-because-first-file-sets-it",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://shadowed:1"}},
            {
                "name": "c2",
                "cluster": {"server": "https://10.0.0.1", "certificate-authority": "ca.crt"},
            },
        ],
        "users": [{"name": "u2", "user": {"tokenFile": "token"}}],
        "contexts": [
            {
                "name": "files",
                "context": {"cluster": "c2", "user": "u2", "namespace": "kube-system"},
            }
        ],
    }
    f1 = tmp_path / "one.yaml"
    f2 = tmp_path / "sub" / "two.yaml"
    f1.write_text(yaml.safe_dump(first))
    f2.write_text(yaml.safe_dump(second))

    env = {"KUBECONFIG": f"{f1}:{tmp_path / 'missing.yaml'}:{f2}"}
    inline = KubeConfig.load(environ=env)
    assert inline.server == "https://127.0.0.1:6443"  # first file wins for c1
    assert inline.ca_data == ca_pem and inline.cert_data and inline.key_data
    ctx = inline.ssl_context()  # loads the inline client cert through a private temp file
    assert not isinstance(ctx, bool)
    assert inline.auth() is None

    files = KubeConfig.load(environ=env, context="files")
    assert files.server == "https://10.0.0.1"
    assert files.ca_file == str(tmp_path / "sub" / "ca.crt")  # relative to its own file
    assert files.token_file == str(tmp_path / "sub" / "token")
    assert files.namespace == "kube-system"
    request = httpx.Request("GET", "https://10.0.0.1/api")
    auth = files.auth()
    assert auth is not None
    flow = auth.auth_flow(request)
    assert next(flow).headers["Authorization"] == "Bearer tok-from-file"

    # An explicit path beats $KUBECONFIG; an unknown context and exec plugins are refused.
    assert KubeConfig.load(f2, environ=env, context="files").server == "https://10.0.0.1"
    with pytest.raises(KubeConfigError, match="context"):
        KubeConfig.load(environ=env, context="nope")
    second["users"] = [{"name": "u2", "user": {"exec": {"command": "aws"}}}]
    f2.write_text(yaml.safe_dump(second))
    with pytest.raises(KubeConfigError, match="exec"):
        KubeConfig.load(f2, context="files")


def test_in_cluster_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(trustme.CA().cert_pem.bytes())
    (tmp_path / "namespace").write_text("calico-system")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = KubeConfig.load(environ=env, service_account_dir=str(tmp_path))
    assert cfg.server == "https://[fd00::1]:443"
    assert cfg.token_file == str(tmp_path / "token")
    assert cfg.ca_file == str(tmp_path / "ca.crt")
    assert cfg.namespace == "calico-system"
    assert cfg.source == "in-cluster"
    # KUBECONFIG wins over in-cluster; nothing at all is an error.
    with pytest.raises(KubeConfigError, match="no such file"):
        KubeConfig.load(environ={**env, "KUBECONFIG": str(tmp_path / "absent")})
    with pytest.raises(KubeConfigError, match="does not exist"):
        KubeConfig.in_cluster(environ=env, service_account_dir=str(tmp_path / "nowhere"))
