"""The feed: datastore events in, encoded once, routed to the syncer views, published.

One datastore feeds all four views (no per-syncer-type watches). Each update is packed once
here; the same bytes go into every view that uses the key and then to every connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack
import structlog
import trio

from typha.model.keys import ALL_SYNCER_TYPES, SyncerType, syncer_types_for
from typha.protocol import SyncStatus
from typha.protocol.codec import PACKED_NIL
from typha.sync.base import (
    ConnectionStatus,
    DatastoreEvent,
    ResyncFinished,
    ResyncStarted,
    Update,
    Updates,
)
from typha.sync.metrics import datastore_invalid_values

from .view import Breadcrumb, EncodedUpdate, SyncerView, compact_revision

log = structlog.get_logger(__name__)

_packer = msgpack.Packer(use_bin_type=True)


def encode_update(update: Update) -> EncodedUpdate:
    value_bytes = PACKED_NIL if update.value is None else _packer.pack(update.value)
    # EncodedUpdate.build's bytes (codec.encode_kv), with this module's packer for the key.
    kv_bytes = b"\x92" + _packer.pack(update.key) + value_bytes
    return EncodedUpdate(update.key, value_bytes, kv_bytes, compact_revision(update.revision))


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The views' bounds (built by ``typha.app`` from the configuration)."""

    max_batch_size: int = 100  # SnapshotCacheMaxBatchSize: updates per breadcrumb
    max_history_secs: float = 300.0  # ServerMaxFallBehindSecs: age of the oldest breadcrumb
    max_history_updates: int = 200_000  # HistoryMaxUpdates: updates the history holds
    tombstone_retention_secs: float = 3600.0  # TombstoneRetentionSecs


@dataclass
class CacheFeed:
    """Applies datastore events to the views and wakes whoever follows them.

    Implements :class:`typha.sync.base.EventSink`.
    """

    views: dict[SyncerType, SyncerView]
    on_crumbs: Callable[[SyncerType, list[Breadcrumb]], None] | None = None
    connected: bool = field(default=False, init=False)
    synced_once: bool = field(default=False, init=False)
    _published: dict[SyncerType, trio.Event] = field(default_factory=dict, init=False)
    # Set (and replaced) when a view's status or the datastore connection changes: what
    # readiness and status reporters wait for, without waking on every update.
    _status_changed: trio.Event = field(default_factory=trio.Event, init=False)
    # For datastores with several watches: which scope last wrote each key, and the keys a
    # scoped relist has seen so far.
    _scope_of: dict[str, str] = field(default_factory=dict, init=False)
    _scope_seen: dict[str, set[str]] = field(default_factory=dict, init=False)

    @classmethod
    def create(cls, syncers: Iterable[SyncerType] = ALL_SYNCER_TYPES, **view_kwargs) -> CacheFeed:
        return cls({s: SyncerView(s, **view_kwargs) for s in syncers})

    @classmethod
    def from_settings(
        cls, settings: CacheSettings, syncers: Iterable[SyncerType] = ALL_SYNCER_TYPES
    ) -> CacheFeed:
        return cls.create(
            syncers,
            max_batch_size=settings.max_batch_size,
            max_history_secs=settings.max_history_secs,
            max_history_updates=settings.max_history_updates,
            tombstone_retention_secs=settings.tombstone_retention_secs,
        )

    def __post_init__(self) -> None:
        self._published = {s: trio.Event() for s in self.views}

    # --- EventSink -------------------------------------------------------------------------------

    async def send(self, event: DatastoreEvent) -> None:
        self.apply(event)
        # Let followers run between datastore batches, so a long list does not starve them.
        await trio.lowlevel.checkpoint()

    def apply(self, event: DatastoreEvent) -> None:
        """Apply one datastore event synchronously (also used by tests and warm restart)."""
        match event:
            case Updates(updates=updates, revision=revision, scope=scope):
                if scope is not None:
                    self._track_scope(updates, scope)
                self._apply_updates(updates, revision)
            case ResyncStarted(reason=reason, scope=None):
                log.info("resync started", reason=reason)
                for syncer, view in self.views.items():
                    self._publish(syncer, view.begin_resync())
                self._signal_status()
            case ResyncStarted(reason=reason, scope=scope):
                log.info("scoped resync started", reason=reason, scope=scope)
                self._scope_seen[scope] = set()
            case ResyncFinished(revision=revision, scope=None):
                for syncer, view in self.views.items():
                    self._publish(syncer, view.end_resync(revision))
                self.synced_once = True
                self._signal_status()
                log.info("resync finished", revision=revision, keys=self.sizes())
            case ResyncFinished(revision=revision, scope=scope):
                self._finish_scoped_resync(scope, revision)
            case ConnectionStatus(connected=connected, detail=detail):
                self._set_connected(connected, detail)

    def _apply_updates(self, updates: Iterable[Update], revision: int | None) -> None:
        routed: dict[SyncerType, list[EncodedUpdate]] = {s: [] for s in self.views}
        for upd in updates:
            targets = syncer_types_for(upd.key)
            if not targets:
                continue
            try:
                enc = encode_update(upd)
            except Exception as exc:
                # The converters should never produce such a value (too deep, too big, not
                # msgpack-native); if one slips through, whatever msgpack raises, it must cost
                # only its own key (treated as deleted, like an invalid value).
                log.error("value cannot be encoded; deleted", key=upd.key, error=str(exc))
                datastore_invalid_values.inc()
                enc = encode_update(Update(upd.key, None))
            for syncer in targets:
                bucket = routed.get(syncer)
                if bucket is not None:
                    bucket.append(enc)
        for syncer, view in self.views.items():
            batch = routed[syncer]
            if batch or revision is not None:
                self._publish(syncer, view.apply(batch, revision))

    def _track_scope(self, updates: Iterable[Update], scope: str) -> None:
        seen = self._scope_seen.get(scope)
        scope_of = self._scope_of
        for upd in updates:
            if seen is not None:
                seen.add(upd.key)
            if upd.value is None:
                scope_of.pop(upd.key, None)
            else:
                scope_of[upd.key] = scope

    def _finish_scoped_resync(self, scope: str, revision: int | None) -> None:
        seen = self._scope_seen.pop(scope, set())
        gone = [k for k, s in self._scope_of.items() if s == scope and k not in seen]
        log.info("scoped resync finished", scope=scope, deleted=len(gone))
        if gone:
            self.apply(Updates([Update(k, None) for k in gone], revision, scope))

    def _set_connected(self, connected: bool, detail: str) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        log.info("datastore connection", connected=connected, detail=detail)
        for syncer, view in self.views.items():
            if not connected:
                self._publish(syncer, view.set_status(SyncStatus.WAIT_FOR_DATASTORE))
            elif self.synced_once and not view.resync_in_progress:
                # Reconnected and resumed the watch without a relist: in sync again.
                self._publish(syncer, view.set_status(SyncStatus.IN_SYNC))
        self._signal_status()

    # --- Followers -------------------------------------------------------------------------------

    def _publish(self, syncer: SyncerType, crumbs: list[Breadcrumb]) -> None:
        if not crumbs:
            return
        if self.on_crumbs is not None:
            self.on_crumbs(syncer, crumbs)
        event = self._published[syncer]
        self._published[syncer] = trio.Event()
        event.set()

    async def wait_for_crumb(self, syncer: SyncerType, after_seq: int) -> None:
        """Return once the view has a breadcrumb newer than ``after_seq``."""
        view = self.views[syncer]
        while view.head_seq <= after_seq:
            await self._published[syncer].wait()

    def changed_event(self, syncer: SyncerType) -> trio.Event:
        return self._published[syncer]

    def status_event(self) -> trio.Event:
        """Set at the next change of a view's status or of the datastore connection."""
        return self._status_changed

    def _signal_status(self) -> None:
        event = self._status_changed
        self._status_changed = trio.Event()
        event.set()

    def sizes(self) -> dict[str, int]:
        return {str(s): len(v) for s, v in self.views.items()}

    @property
    def in_sync(self) -> bool:
        return all(v.status is SyncStatus.IN_SYNC for v in self.views.values())
