"""Start-up writes: the objects Calico Typha makes sure exist before it starts syncing.

Calico Typha initializes the datastore (libcalico-go's EnsureInitialized) before its syncers
start: the `default` ClusterInformation and the tiers `default` (Deny, order 1,000,000),
`kube-admin` (Pass, 1,000) and `kube-baseline` (Pass, 10,000,000).  Felix relies on them: the
ClusterInformation carries `datastoreReady` (the ReadyFlag Felix waits for) and the cluster GUID,
and the tiers' order and default action decide what happens to traffic no policy matched.

We create each object only when it is missing and never change an existing one (Go also fills
an empty clusterGUID/datastoreReady and appends its cluster type to an existing
ClusterInformation; we leave operator data alone).  A datastore identity that may not write is
logged and skipped, as Go does for tiers, so a read-only Typha still serves.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger(__name__)

API_VERSION_V3 = "projectcalico.org/v3"
CRD_API_VERSION = "crd.projectcalico.org/v1"
CLUSTER_TYPE = "typha"
# (name, defaultAction, order) of the tiers Calico creates itself.
# Whole numbers: Go writes its float64 orders without a fraction, and so do we.
DEFAULT_TIERS: tuple[tuple[str, str, int], ...] = (
    ("default", "Deny", 1_000_000),
    ("kube-admin", "Pass", 1_000),
    ("kube-baseline", "Pass", 10_000_000),
)
RETRY_DELAY = 1.0  # Go Typha retries the whole initialization every second
ATTEMPT_TIMEOUT = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cluster_information(datastore_type: str) -> dict[str, Any]:
    """The ClusterInformation Go creates: a fresh GUID (32 hex digits), datastore ready, and
    cluster type `typha` (`typha,kdd` on Kubernetes).  No calicoVersion: Typha passes none."""
    cluster_type = CLUSTER_TYPE + (",kdd" if datastore_type == "kubernetes" else "")
    return {
        "kind": "ClusterInformation",
        "apiVersion": API_VERSION_V3,
        "metadata": {"name": "default"},
        "spec": {
            "clusterGUID": uuid.uuid4().hex,
            "clusterType": cluster_type,
            "datastoreReady": True,
        },
    }


def tier(name: str, action: str, order: int) -> dict[str, Any]:
    return {
        "kind": "Tier",
        "apiVersion": API_VERSION_V3,
        "metadata": {"name": name},
        "spec": {"order": order, "defaultAction": action},
    }


def startup_objects(datastore_type: str) -> list[dict[str, Any]]:
    return [cluster_information(datastore_type)] + [tier(*t) for t in DEFAULT_TIERS]


# -- etcd ----------------------------------------------------------------------------------------


def etcd_document(obj: dict[str, Any]) -> dict[str, Any]:
    """The stored form on etcd: like libcalico-go's v3 client, a uid and creation timestamp (and
    the empty status Go's Tier struct always marshals)."""
    meta = {**obj["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": _now()}
    doc = {**obj, "metadata": meta}
    if obj["kind"] == "Tier":
        doc["status"] = {}
    return doc


async def ensure_initialized_etcd(client: Any) -> list[str]:
    """Create the missing start-up objects in etcd; returns the names of those created."""
    from typha.sync.etcd_common import EtcdError
    from typha.sync.etcd_writer import encode_resource

    created = []
    for obj in startup_objects("etcdv3"):
        key, value = encode_resource(etcd_document(obj))
        try:
            if await client.create(key, value):
                created.append(f"{obj['kind']}/{obj['metadata']['name']}")
        except EtcdError as exc:
            if not _is_permission_error(str(exc)):
                raise
            log.warning("not allowed to create start-up object", key=key, error=str(exc))
    return created


def _is_permission_error(message: str) -> bool:
    text = message.lower()
    return "permission denied" in text or "not authorized" in text or "unauthorized" in text


# -- Kubernetes ----------------------------------------------------------------------------------


def crd_document(obj: dict[str, Any]) -> dict[str, Any]:
    """The v3 object as the crd.projectcalico.org/v1 custom resource Calico stores.  Calico's
    Kubernetes backend keeps the v3 metadata a custom resource cannot hold natively (here the
    creation time its client sets) as JSON in the `projectcalico.org/metadata` annotation."""
    note = json.dumps({"creationTimestamp": _now()}, separators=(",", ":"))
    meta = {**obj["metadata"], "annotations": {"projectcalico.org/metadata": note}}
    return {**obj, "apiVersion": CRD_API_VERSION, "metadata": meta}


async def ensure_initialized_k8s(client: Any) -> list[str]:
    """Create the missing start-up custom resources; returns the names of those created."""
    from typha.k8s.client import KubeConflict, KubeForbidden, resource_path

    created = []
    for obj in startup_objects("kubernetes"):
        plural = "clusterinformations" if obj["kind"] == "ClusterInformation" else "tiers"
        name = obj["metadata"]["name"]
        try:
            await client.create(resource_path(CRD_API_VERSION, plural), crd_document(obj))
            created.append(f"{obj['kind']}/{name}")
        except KubeConflict:
            continue  # already there: never overwrite
        except KubeForbidden as exc:
            log.warning(
                "not allowed to create start-up object", kind=obj["kind"], name=name, error=str(exc)
            )
    return created


# -- the loop ------------------------------------------------------------------------------------


def is_calico_datastore(datastore: Any) -> bool:
    """etcd or Kubernetes: a datastore Calico Typha could serve (not the in-memory demo one)."""
    return type(datastore).__name__ in ("EtcdDatastore", "KubernetesDatastore")


async def ensure_initialized(datastore: Any) -> list[str]:
    """Initialize the datastore behind `datastore` (etcd or Kubernetes), retrying every second
    until it succeeds, like Go Typha.  Other datastores (in-memory) need nothing."""
    step: Callable[[Any], Awaitable[list[str]]]
    kind = type(datastore).__name__
    if kind == "EtcdDatastore":
        step = ensure_initialized_etcd
    elif kind == "KubernetesDatastore":
        step = ensure_initialized_k8s
    else:
        return []
    while True:
        try:
            with trio.fail_after(ATTEMPT_TIMEOUT):
                async with datastore.make_client() as client:
                    created = await step(client)
            log.info("datastore initialized", created=created)
            return created
        except Exception as exc:  # any datastore trouble: retry like Go (it blocks start-up)
            log.warning(
                "failed to initialize the datastore; retrying", error=str(exc) or type(exc).__name__
            )
            await trio.sleep(RETRY_DELAY)
