"""The server's connections: by id and by syncer, plus those still handshaking."""

from __future__ import annotations

from dataclasses import dataclass, field

from typha import metrics
from typha.model.keys import SyncerType

from .connection import Connection


@dataclass
class ConnectionRegistry:
    """The connections that finished their handshake, by id and by syncer, and the count of
    those still handshaking (the accept loop counts one in before its task even starts)."""

    syncers: list[SyncerType]
    connections: dict[int, Connection] = field(default_factory=dict)
    by_syncer: dict[SyncerType, set[Connection]] = field(default_factory=dict)
    handshaking: int = 0

    def __post_init__(self) -> None:
        self.by_syncer = {s: set() for s in self.syncers}

    @property
    def active(self) -> int:
        return len(self.connections) + self.handshaking

    def register(self, conn: Connection) -> None:
        self.handshaking -= 1
        conn.registered = True
        self.connections[conn.info.conn_id] = conn
        assert conn.syncer is not None
        self.by_syncer[conn.syncer].add(conn)
        metrics.connections_streaming.labels(str(conn.syncer)).inc()

    def unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.info.conn_id, None)
        if conn.syncer is not None and conn in self.by_syncer[conn.syncer]:
            self.by_syncer[conn.syncer].discard(conn)
            metrics.connections_streaming.labels(str(conn.syncer)).dec()
