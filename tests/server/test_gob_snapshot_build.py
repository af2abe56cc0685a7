"""The gob snapshot's build releases each struct body once it is in its message (so the build
holds the bodies or the messages, not both); the bytes are those of encoding every message
from the full list of bodies."""

from __future__ import annotations

import msgpack

from typha.cache.snapshot import Snapshot
from typha.protocol import SyncStatus
from typha.protocol.gob.encoder import SNAPSHOT_KVS_PER_MESSAGE, kvs_part_bodies, status_part
from typha.server.gob_codec import _snapshot_plain, snapshot_bodies


def _snapshot(n: int) -> Snapshot:
    keys = [f"/calico/v1/host/node{i % 7}/workload/k8s/ns%2fpod{i}/endpoint/eth0" for i in range(n)]
    kvs = [msgpack.packb([k, {"name": k, "i": i}], use_bin_type=True) for i, k in enumerate(keys)]
    return Snapshot(
        seq=3,
        revision=11,
        status=SyncStatus.IN_SYNC,
        n_kvs=n,
        created=0.0,
        kvs=kvs,
        kv_revisions=list(range(1, n + 1)),
    )


def test_the_snapshot_is_every_message_of_the_sorted_bodies_then_the_status() -> None:
    step = SNAPSHOT_KVS_PER_MESSAGE
    # Several full messages and a partial last one; and a snapshot smaller than one message.
    for n in (2 * step + 345, 17):
        snap = _snapshot(n)
        bodies = snapshot_bodies(snap)
        want = b"".join(
            [kvs_part_bodies(bodies[i : i + step], step).plain for i in range(0, n, step)]
            + [status_part(int(SyncStatus.IN_SYNC)).plain]
        )
        assert _snapshot_plain(snap) == want
        assert len(bodies) == n and all(bodies)  # the caller's own list is untouched
