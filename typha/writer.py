"""`typha apply -f` / `typha delete -f`: write or remove Calico v3 resources (YAML or JSON, as
calicoctl accepts them) in the configured datastore, validating them all before writing any."""

from __future__ import annotations

import sys
from typing import Any

from typha.config import Config
from typha.resources import load_documents, validate_resources
from typha.sync.convert.errors import InvalidResource


def _describe(r: dict[str, Any]) -> str:
    md = r.get("metadata", {})
    ns = md.get("namespace")
    return f"{r.get('kind')} {ns + '/' if ns else ''}{md.get('name')}"


async def write_etcd(cfg: Config, resources: list[dict[str, Any]], delete: bool) -> None:
    from typha.app import etcd_settings
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_writer import apply_resources, delete_resources

    # The same endpoints and credentials as `typha serve` (a scheme-less endpoint takes
    # EtcdScheme there too).
    etcd = etcd_settings(cfg)
    async with EtcdClient.with_access(list(etcd.endpoints), etcd.access) as client:
        if delete:
            await delete_resources(client, resources)
        else:
            await apply_resources(client, resources)


async def run_write(cfg: Config, path: str, delete: bool) -> int:
    """Returns the process exit code: 0 written, 1 invalid input or datastore error."""
    try:
        docs = load_documents(path)
        resources = validate_resources(docs) if not delete else docs
    except (InvalidResource, ValueError) as exc:
        print(f"typha: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"typha: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not resources:
        print(f"typha: {path}: no resources in it (empty?)", file=sys.stderr)
        return 1
    if cfg.datastore_type != "etcdv3":
        print(
            "typha: apply/delete write to etcd; in Kubernetes mode use kubectl with the "
            "crd.projectcalico.org resources",
            file=sys.stderr,
        )
        return 1
    try:
        await write_etcd(cfg, resources, delete)
    except Exception as exc:
        print(f"typha: {'delete' if delete else 'apply'} failed: {exc}", file=sys.stderr)
        return 1
    verb = "deleted" if delete else "applied"
    for r in resources:
        print(f"{verb} {_describe(r)}")
    return 0
