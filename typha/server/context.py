"""What a connection may see of the server: a narrow context, not the server itself.

A :class:`~typha.server.connection.Connection` needs the epoch and version it announces, the
syncer views and their snapshot and catch-up caches, a way to wait for the next breadcrumb,
the registry it joins once its handshake is done, and its own timeouts. The server builds one
:class:`ConnectionContext` and hands it to every connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from typha.cache.catchup import CatchUpCache
from typha.cache.snapshot import SnapshotCache
from typha.cache.view import SyncerView
from typha.model.keys import SyncerType

from .budget import InputBudget


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """A connection's timeouts, in seconds (Typha's defaults; ``typha.app`` sets them from
    ServerHandshakeTimeoutSecs, ServerWriteTimeoutSecs, ServerPingIntervalSecs and the
    effective pong timeout), and how long a new client's position stays in the history after
    its snapshot, however old (ServerNewClientFallBehindGracePeriod)."""

    handshake_timeout: float = 10.0
    write_timeout: float = 120.0
    ping_interval: float = 10.0
    pong_timeout: float = 60.0
    new_client_grace: float = 300.0


class Registry(Protocol):
    """Where a connection registers once its handshake is done (``registry.py``)."""

    def register(self, conn: Any) -> None: ...

    def unregister(self, conn: Any) -> None: ...


@dataclass(frozen=True)
class ConnectionContext:
    epoch: int
    server_version: str
    views: Mapping[SyncerType, SyncerView]
    snapshots: Mapping[SyncerType, SnapshotCache]
    wait_for_crumb: Callable[[SyncerType, int], Awaitable[None]]
    registry: Registry
    settings: ConnectionSettings
    # KVs per delta MsgKVs for Calico's gob clients (ServerMaxMessageSize).
    max_kvs_per_message: int = 100
    # Kubernetes: v3 resources carry their resourceVersion as the gob V3ResourceVersion (on
    # etcd Calico's v3 objects have none, so it stays empty, as from Go Typha).
    v3_resource_versions: bool = False
    # Input buffered by connections that have not completed their hello, server-wide.
    input_budget: InputBudget = field(default_factory=InputBudget)
    # Shared conflated catch-ups, per syncer view (``typha/cache/catchup.py``).
    catchups: Mapping[SyncerType, CatchUpCache] = field(default_factory=dict)
    # Each view's fan-out mark (``fanout.FanOutMark``, anything with a ``seq``): a writer on
    # plain TCP that is behind writes up to it and leaves the rest to the fan-out's next run.
    # Without one (no fan-out) a writer writes up to the head.
    fanout_marks: Mapping[SyncerType, Any] = field(default_factory=dict)
