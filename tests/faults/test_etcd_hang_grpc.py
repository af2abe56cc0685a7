"""The hung-etcd fault (SIGSTOP, then SIGCONT) of test_etcd_hang.py with EtcdAPI=grpc: the
probe on the shared unary connection notices the hang, the watch on its own connection is
dropped and resumed by revision, every client converges without a disconnect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.faults.harness as harness
from tests.faults import test_etcd_hang as base
from typha.sync.etcd import EtcdDatastore

_made: list[EtcdDatastore] = []


class _GrpcDatastore(EtcdDatastore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("api", "grpc")
        super().__init__(*args, **kwargs)
        _made.append(self)


@pytest.fixture(autouse=True)
def grpc_datastores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _made.clear()
    monkeypatch.setattr(harness, "EtcdDatastore", _GrpcDatastore)
    yield
    assert _made and all(ds.api == "grpc" and ds.probe_failures > 0 for ds in _made)


test_hung_etcd_is_detected_reported_and_recovered = (
    base.test_hung_etcd_is_detected_reported_and_recovered
)
