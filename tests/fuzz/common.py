"""What the fuzz tests share: the seeds, the node client that takes what converters produce, and
a client session past its handshake."""

from __future__ import annotations

from typing import Any

import msgpack

from felix_client.calc import CalcEngine, render_files
from typha.protocol import ClientSession, ServerProtocol
from typha.protocol.messages import ClientHello
from typha.sync.base import Update
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.etcd import convert_etcd_kv

from .seeds import base_model, etcd_seeds, k8s_seeds

ETCD = etcd_seeds()
K8S = k8s_seeds()
NODE = "node1"  # has workloads in config/examples, so its endpoints are rendered


BASE = base_model()
BASE_KEYS = sorted(BASE)


def check_updates(updates: list[Update]) -> None:
    """What a converter produced can go on the wire: string keys, msgpack-able values."""
    for update in updates:
        assert isinstance(update.key, str) and update.key.startswith("/calico/"), update
        msgpack.packb(update.value, use_bin_type=True)


def render_with(updates: list[tuple[str, Any]]) -> dict[str, str]:
    engine = CalcEngine(NODE)
    engine.apply_updates(BASE.items())
    engine.snapshot_done()
    engine.flush()
    engine.apply_updates(updates)
    engine.flush()
    return render_files(engine.state())


def etcd_value_reaches_clients(key: str, obj: Any) -> None:
    """``obj`` stored at ``key`` converts (or raises only ``InvalidResource``), what it gives can
    go on the wire, and the node client takes it on top of the example state."""
    try:
        updates = convert_etcd_kv(key, obj)
    except InvalidResource:
        return
    check_updates(updates)
    render_with([(u.key, u.value) for u in updates])


def session_after_hello(header_only: bool) -> ClientSession:
    """A client session (full or header-only) that has had a valid ServerHello."""
    session = ClientSession("n", header_only=header_only, sampler=lambda count: 1)
    server = ServerProtocol()
    server.receive_data(session.connect())
    hello = server.next_event()
    assert isinstance(hello, ClientHello)
    session.receive_data(
        server.accept(hello, server_version="f", epoch=1, conn_id=1, resumed=False)
    )
    assert session.next_event() is not None
    return session
