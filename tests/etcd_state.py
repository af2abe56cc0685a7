"""An independent view of what etcd holds: one plain range read of ``/calico/`` through the
gateway, converted here, for comparing with what the datastore and its clients hold."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.peers.etcd import EtcdServer, b64
from typha.sync.convert import InvalidResource, convert_etcd_kv, is_calico_etcd_key


def etcd_model_state(etcd: EtcdServer) -> tuple[dict[str, Any], int]:
    """(model state of every syncer, revision) from ONE range read of /calico/."""
    reply = etcd.call("/v3/kv/range", {"key": b64("/calico/"), "range_end": b64("/calico0")})
    state: dict[str, Any] = {}
    for kv in reply.get("kvs") or ():
        key = base64.b64decode(kv["key"]).decode()
        if not is_calico_etcd_key(key):
            continue
        try:
            obj = json.loads(base64.b64decode(kv.get("value", "")))
            updates = convert_etcd_kv(key, obj) if isinstance(obj, dict) else []
        except (ValueError, InvalidResource):
            continue
        for u in updates:
            if u.value is not None:
                assert u.key not in state, f"two etcd keys produce {u.key}"
                state[u.key] = u.value
    return state, int(reply["header"]["revision"])
