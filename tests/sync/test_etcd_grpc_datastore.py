"""EtcdDatastore with EtcdAPI=grpc against a real etcd: the core behaviour tests of
tests/sync/test_etcd_datastore.py (list, watch, deletes, compaction -> relist, SIGKILL and
resume by revision, invalid values, warm start with prev_kv, progress notifications, an
unreachable etcd) re-run with every datastore they build speaking gRPC.

The borrowed tests build their datastores through the module global ``EtcdDatastore``; a
fixture swaps in a subclass whose default ``api`` is ``grpc`` and checks afterwards that each
datastore made in the test used it. Their writers and independent reads stay on the gateway
client and etcdctl, so the two transports check each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.sync.test_etcd_datastore as base
from typha.sync.etcd import EtcdDatastore
from typha.sync.etcd_grpc import GrpcEtcdClient

_made: list[EtcdDatastore] = []


class _GrpcDatastore(EtcdDatastore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("api", "grpc")
        super().__init__(*args, **kwargs)
        _made.append(self)


@pytest.fixture(autouse=True)
def grpc_datastores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _made.clear()
    monkeypatch.setattr(base, "EtcdDatastore", _GrpcDatastore)
    yield
    assert _made, "the borrowed test made no datastore"
    assert all(ds.api == "grpc" for ds in _made)
    assert all(isinstance(ds.make_client(), GrpcEtcdClient) for ds in _made)
    assert all(ds.watches_started > 0 for ds in _made)  # each one got as far as watching


test_list_then_watch_20k_keys = base.test_list_then_watch_20k_keys
test_compaction_in_the_middle_of_a_stream = base.test_compaction_in_the_middle_of_a_stream
test_sigkill_and_restart = base.test_sigkill_and_restart
test_invalid_values_become_deletions = base.test_invalid_values_become_deletions
test_warm_start_from_revision = base.test_warm_start_from_revision
test_progress_notifications_advance_the_revision = (
    base.test_progress_notifications_advance_the_revision
)
test_unreachable_at_start_then_available = base.test_unreachable_at_start_then_available
