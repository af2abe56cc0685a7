"""The sync server's own settings, typed (built from the configuration by ``typha.app``).

Each field names the parameter it comes from (docs/configuration.md); the defaults are
Typha's, so a test can build ``ServerSettings(port=0, host="127.0.0.1")`` and change only what
it exercises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import ConnectionSettings


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = ""  # ServerHost ("" = all addresses)
    port: int = 5473  # ServerPort, resolved (0 = a random port)
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    max_connections: int = 10000  # MaxConnectionsUpperLimit (rebalancing may lower it)
    connection_drop_interval: float = 1.0  # ConnectionDropIntervalSecs
    shutdown_timeout: float = 300.0  # ShutdownTimeoutSecs
    shutdown_drop_interval_max: float = 1.0  # ShutdownConnectionDropIntervalMaxSecs
    fanout_interval: float = 0.005  # ServerFanoutIntervalSecs
    snapshot_reuse_secs: float = 10.0  # SnapshotReuseSecs
    catch_up_max_share: float = 0.5  # CatchUpMaxShare
    redirect_addrs: tuple[str, ...] = ()  # RedirectAddrs
    client_cn: str = ""  # ClientCN (with TLS)
    client_urisan: str = ""  # ClientURISAN (with TLS)
    max_kvs_per_message: int = 100  # ServerMaxMessageSize (gob clients)
    # DatastoreType=kubernetes: v3 resources carry their resourceVersion on the gob wire.
    v3_resource_versions: bool = False
