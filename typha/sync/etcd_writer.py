"""Write and delete projectcalico.org/v3 resources in etcd, the way Calico lays them out.

Used by ``typha apply/delete -f`` and by the load generator's churn. Resources go to
``etcd_key_for(resource)`` with ``etcd_value_for(resource)`` as compact JSON (IPAM blocks and
affinities get their v1-style values), in transactions that respect etcd's limits:
``--max-txn-ops`` (128 by default), ``--max-request-bytes`` (1.5 MiB by default; values are
base64-encoded on the wire, so we keep the raw payload of one txn well under 1 MiB), and no two
operations on the same key in one txn (etcd rejects "duplicate key given in txn request").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from typha.sync.etcd_common import DeleteOp, PutOp, TxnOp

if TYPE_CHECKING:  # either client; not imported at run time (etcd start-up uses this module)
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_grpc import GrpcEtcdClient

MAX_TXN_OPS = 128
# Raw key+value bytes per txn: base64 makes it 4/3 larger, plus JSON framing, and the total
# must stay below etcd's default 1.5 MiB request limit.
MAX_TXN_BYTES = 768 * 1024


def encode_resource(resource: dict[str, Any]) -> tuple[str, bytes]:
    """(etcd key, JSON value) for one v3 resource. Raises ``InvalidResource`` if the resource
    has no known kind or name."""
    from typha.sync.convert import etcd_key_for, etcd_value_for

    key = etcd_key_for(resource)
    value = json.dumps(etcd_value_for(resource), separators=(",", ":"), sort_keys=True)
    return key, value.encode()


def batch_ops(
    ops: Iterable[TxnOp], *, max_ops: int = MAX_TXN_OPS, max_bytes: int = MAX_TXN_BYTES
) -> Iterator[list[TxnOp]]:
    """Split ``ops`` into txn-sized batches, in order. A batch ends early when a key repeats,
    so that later writes of a key still win over earlier ones.

    A single operation larger than ``max_bytes`` gets a batch of its own (etcd decides).
    """
    batch: list[TxnOp] = []
    keys: set[bytes] = set()
    size = 0
    for op in ops:
        key = op.key if isinstance(op.key, bytes) else op.key.encode()
        op_size = len(key) + (len(op.value) if isinstance(op, PutOp) else 0)
        if batch and (len(batch) >= max_ops or size + op_size > max_bytes or key in keys):
            yield batch
            batch, keys, size = [], set(), 0
        batch.append(op)
        keys.add(key)
        size += op_size
    if batch:
        yield batch


async def write_ops(client: EtcdClient | GrpcEtcdClient, ops: Iterable[TxnOp]) -> int | None:
    """Apply ``ops`` in as few txns as etcd allows; returns the last txn's revision (None if
    there was nothing to do). Not atomic across batches: a failure leaves earlier batches
    applied, and re-running is safe because puts and deletes are idempotent."""
    revision: int | None = None
    for batch in batch_ops(ops):
        revision = await client.txn(batch)
    return revision


async def apply_resources(
    client: EtcdClient | GrpcEtcdClient, resources: Iterable[dict[str, Any]]
) -> int | None:
    """Create or replace ``resources`` in etcd; returns the revision of the last write."""
    ops: list[TxnOp] = []
    for resource in resources:
        key, value = encode_resource(resource)
        ops.append(PutOp(key, value))
    return await write_ops(client, ops)


async def delete_resources(
    client: EtcdClient | GrpcEtcdClient, resources: Iterable[dict[str, Any]]
) -> int | None:
    """Delete ``resources`` (only kind, name and namespace are needed) from etcd; returns the
    revision of the last write. Deleting a missing key is not an error."""
    from typha.sync.convert import etcd_key_for

    return await write_ops(client, [DeleteOp(etcd_key_for(r)) for r in resources])
