"""The etcd v3 datastore: one consistent list, then one watch, feeding every syncer type.

Algorithm (docs/etcd.md):

1. **List** every key of the Calico sub-trees (``CALICO_ETCD_PREFIXES``: v3 resources and IPAM
   blocks/affinities) in pages of ``page_size`` keys, all read at the revision of the first page,
   and emit ``ResyncStarted`` → ``Updates`` (≤ ``batch_size`` each) → ``ResyncFinished(rev)``.
   The cache, not this class, deletes keys that the list did not produce.
2. **Watch** the smallest key range covering those sub-trees from ``rev + 1`` with progress
   notifications, filtering out keys in between (e.g. IPAM handles). Each watch response becomes
   one ``Updates`` stamped with its last event's revision; a progress notification becomes an
   empty ``Updates`` with the notified revision, so the cache knows how far it is.
3. **Compaction** (watch cancelled with ``compact_revision``, or the pinned list revision
   compacted), any other watch cancellation, a store revision that went backwards (etcd
   restored from a backup) or a different cluster id → back to 1 with a new ``ResyncStarted``.
4. **Unreachable etcd** → ``ConnectionStatus(False, detail)``, exponential backoff with jitter
   (capped at ``backoff_cap``), then resume the *watch* from the last revision + 1: no list is
   needed while that revision is still in etcd's history. ``ConnectionStatus(True)`` when a
   request succeeds again.
5. **Invalid values** (not JSON, or a resource the converter rejects) are logged, counted
   (``invalid_values`` and ``typha_datastore_invalid_values_total``) and treated as a deletion of
   everything that key produced before.

``run(sink, start_revision=n)`` (warm restart) skips step 1 and watches from ``n + 1``; a
compacted ``n`` falls back to step 1. Because the source → model-key map of the
``ResourceExpander`` is empty after a warm start, the watch then asks etcd for ``prev_kv`` so
that deleting or shrinking a resource still deletes what its previous value produced.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import trio

from typha import jsonlimit
from typha.sync.base import (
    ConnectionStatus,
    EventSink,
    ResourceExpander,
    ResyncFinished,
    ResyncStarted,
    Update,
    Updates,
    retry_delay,
    short_repr,
)
from typha.sync.etcd_common import (
    DEFAULT_ENDPOINT,
    EtcdAccess,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    RangeResult,
    RevisionCompacted,
    WatchCanceled,
    WatchEnded,
    WatchEvent,
    prefix_range_end,
)
from typha.sync.metrics import (
    datastore_convert_secs,
    datastore_invalid_values,
    datastore_probe_failures,
)

if TYPE_CHECKING:
    from typha.sync.etcd_client import EtcdClient
    from typha.sync.etcd_grpc import GrpcEtcdClient

log = structlog.get_logger()

# Keys per page of the list. etcd counts every key left in the range for each page (a range
# with a limit still reports the total), so the list's cost in etcd grows with pages x keys:
# listing 150,000 keys took etcd 3.6 CPU-s in pages of 1,000 and 0.87 in pages of 10,000
# (wall 4.4 -> 1.7 s; docs/etcd.md). A page is ~10 MB of values at most: still bounded.
LIST_PAGE_SIZE = 10_000

# The ways to reach etcd (EtcdAPI): its gRPC API (default) or its JSON gateway.
ETCD_APIS = ("grpc", "gateway")

INVALID_VALUES = datastore_invalid_values  # shared with the Kubernetes datastore
PROBE_FAILURES = datastore_probe_failures

_T = TypeVar("_T")

# Fallback if the converter package cannot be imported (it is imported lazily).
_DEFAULT_PREFIXES: tuple[str, ...] = (
    "/calico/resources/v3/projectcalico.org/",
    "/calico/ipam/v2/assignment/",
    "/calico/ipam/v2/host/",
)

# How often a watch may end without delivering anything before we stop trusting it and
# re-list (libcalico-go re-lists after repeated watch errors without progress).
_MAX_FRUITLESS_WATCHES = 5

# Yield to the scheduler every this many converted values, so that a 20k-event watch message
# or a long list page does not block the fan-out for its whole conversion.
_CHECKPOINT_EVERY = 500


class _Resync(Exception):
    """Internal: the watch cannot continue; list again (``reason`` for logs and metrics)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _converter() -> tuple[Callable[[str, dict[str, Any]], list[Update]], type[Exception]]:
    # Imported lazily so that this module (and the client) import without the converters.
    from typha.sync.convert import InvalidResource, convert_etcd_kv

    return convert_etcd_kv, InvalidResource


def _calico_prefixes() -> tuple[str, ...]:
    try:
        from typha.sync.convert import CALICO_ETCD_PREFIXES
    except ImportError:  # pragma: no cover - only while the converters are missing
        return _DEFAULT_PREFIXES
    return tuple(CALICO_ETCD_PREFIXES)


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how to reach it (EtcdEndpoints, or EtcdScheme://EtcdAddr; the TLS
    files and credentials; EtcdHangDetectionSecs; EtcdAPI)."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    access: EtcdAccess = field(default_factory=EtcdAccess)
    hang_detection_secs: float | None = 30.0
    api: str = "grpc"


class EtcdDatastore:
    """The etcd v3 :class:`~typha.sync.base.Datastore` (``DatastoreType = etcdv3``).

    Public counters for tests and diagnostics: ``invalid_values``, ``resyncs``,
    ``watches_started``, and ``revision`` (the last revision emitted).
    """

    name = "etcdv3"

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        access: EtcdAccess | None = None,
        page_size: int = LIST_PAGE_SIZE,
        batch_size: int = 1000,
        prefixes: Sequence[str] | None = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        min_resync_interval: float = 0.5,
        watch_idle_timeout: float | None = 660.0,
        hang_detection_secs: float | None = 30.0,
        convert: Callable[[str, dict[str, Any]], list[Update]] | None = None,
        api: str = "grpc",
    ):
        """``watch_idle_timeout`` re-opens a watch that stayed silent that long (a half-open
        TCP connection would otherwise hang forever); keep it above etcd's
        ``--watch-progress-notify-interval`` (10 min by default) or set None.
        ``hang_detection_secs``: while listing or watching, a bounded probe (a one-key range)
        runs every third of this and may take two thirds of it, so an etcd that stops
        answering (SIGSTOPped, a black-holed connection) is noticed within this time; the
        watch is then dropped and resumed from its revision like any outage (None: no probe).
        ``convert`` replaces ``convert_etcd_kv`` (fault injection in tests). ``api`` is how
        etcd is reached: ``grpc`` (the default, :mod:`typha.sync.etcd_grpc`) or ``gateway``
        (its JSON gateway, :mod:`typha.sync.etcd_client`), both with the same TLS and
        credentials."""
        self.endpoints = endpoints
        self.access = access if access is not None else EtcdAccess()
        if api not in ETCD_APIS:
            raise ValueError(f"EtcdAPI must be one of {', '.join(ETCD_APIS)}, not {api!r}")
        self.api = api
        self.page_size = page_size
        self.batch_size = batch_size
        self.prefixes = tuple(prefixes) if prefixes is not None else _calico_prefixes()
        # The smallest single range that covers every prefix: one list and one watch see all
        # sub-trees at one revision; keys in between are filtered out client-side.
        self._range_start = min(self.prefixes).encode()
        self._range_end = max(prefix_range_end(p) for p in self.prefixes)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.min_resync_interval = min_resync_interval
        self.watch_idle_timeout = watch_idle_timeout
        self.hang_detection_secs = hang_detection_secs
        self.probe_failures = 0

        self.invalid_values = 0
        self.resyncs = 0
        self.watches_started = 0
        self.revision: int | None = None
        self._expander = ResourceExpander()
        self._connected: bool | None = None
        self._cluster_id: str | None = None
        self._last_resync_at: float | None = None
        # After a warm start the expander knows nothing; ask etcd for previous values until a
        # full list has filled it in.
        self._need_prev_kv = False
        self._warm_catch_up = False
        self._catch_up_to: int | None = None
        self._convert, self._invalid_error = _converter()
        if convert is not None:
            self._convert = convert

    @classmethod
    def from_settings(cls, settings: EtcdSettings, **kwargs: Any) -> EtcdDatastore:
        """Build from the etcd settings (``typha.app`` makes them from the configuration).
        Extra keyword arguments go to the constructor."""
        return cls(
            list(settings.endpoints),
            access=settings.access,
            **{"hang_detection_secs": settings.hang_detection_secs, "api": settings.api, **kwargs},
        )

    def make_client(self) -> EtcdClient | GrpcEtcdClient:
        """A client with this datastore's endpoints, credentials and API (for tools and tests).
        Both clients have the calls used here, with the same types and exceptions."""
        # Each transport is imported only when chosen: h2 and protobuf are not loaded for the
        # gateway, nor httpx (tens of ms of a cold start) for gRPC.
        if self.api == "grpc":
            from typha.sync.etcd_grpc import GrpcEtcdClient

            return GrpcEtcdClient.with_access(self.endpoints, self.access)
        from typha.sync.etcd_client import EtcdClient

        return EtcdClient.with_access(self.endpoints, self.access)

    # --- main loop ---------------------------------------------------------------------------

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None:
        """List and watch until cancelled; never returns on etcd errors (see module doc)."""
        log.info("etcd datastore starting", api=self.api, endpoints=self.endpoints)
        async with self.make_client() as client:
            if self.api != "grpc":
                await self._run(client, sink, start_revision)
                return
            # gRPC's unary connection is read between calls too (see read_idle_connection).
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.read_idle_connection)  # type: ignore[union-attr]
                try:
                    await self._run(client, sink, start_revision)
                except Exception as exc:  # re-raised below, outside the nursery (not grouped)
                    error = exc
                nursery.cancel_scope.cancel()
            if error is not None:
                raise error

    async def _run(
        self, client: EtcdClient | GrpcEtcdClient, sink: EventSink, start_revision: int | None
    ) -> None:
        """The list-and-watch loop of :meth:`run`, on its client."""
        resync_reason: str | None = "initial"
        if start_revision is not None:
            resync_reason = None
            self.revision = start_revision
            self._need_prev_kv = True
            # Caught up once the watch reaches the revision etcd had when it was created;
            # then the cache learns it is in sync (ResyncFinished without ResyncStarted).
            self._warm_catch_up = True
            log.info("etcd warm start", start_revision=start_revision)
        failures = 0  # consecutive unavailability, for the backoff
        fruitless = 0  # consecutive watches that ended without delivering anything
        while True:
            try:
                if resync_reason is not None:
                    await self._probed(client, self._resync(client, sink, resync_reason))
                    resync_reason = None
                    failures = 0
                delivered = await self._probed(client, self._watch(client, sink))
                failures = 0
                fruitless = 0 if delivered else fruitless + 1
                if fruitless >= _MAX_FRUITLESS_WATCHES:
                    resync_reason, fruitless = "watch-errors", 0
                elif fruitless:
                    await trio.sleep(self._backoff(fruitless))
            except _Resync as exc:
                resync_reason = exc.reason
            except RevisionCompacted as exc:
                log.info("etcd revision compacted; resyncing", detail=str(exc))
                resync_reason = "compacted"
            except WatchCanceled as exc:
                log.warning("etcd watch cancelled; resyncing", detail=str(exc))
                resync_reason = "watch-canceled"
            except EtcdError as exc:
                # Unreachable, or refusing us (auth, permissions): either way we are not
                # syncing. Keep serving the cache, report it, back off and retry.
                failures += 1
                delay = self._backoff(failures)
                level = log.info if isinstance(exc, EtcdUnavailable) else log.error
                level(
                    "etcd request failed; retrying",
                    error=str(exc),
                    kind=type(exc).__name__,
                    retry_in=round(delay, 3),
                )
                await self._set_connected(sink, False, f"{type(exc).__name__}: {exc}")
                await trio.sleep(delay)

    async def _probed(self, client: EtcdClient | GrpcEtcdClient, work: Awaitable[_T]) -> _T:
        """Run ``work`` (a list or a watch) while probing etcd; raise ``EtcdUnavailable`` if
        a probe fails, after cancelling the work."""
        if not self.hang_detection_secs:
            return await work
        failure: EtcdError | None = None
        error: Exception | None = None
        result: Any = None
        async with trio.open_nursery() as nursery:

            async def probe() -> None:
                nonlocal failure
                failure = await self._probe_until_failure(client)
                nursery.cancel_scope.cancel()

            nursery.start_soon(probe)
            try:
                result = await work
            except Exception as exc:  # re-raised below, outside the nursery (not grouped)
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if failure is not None:
            raise failure
        return result  # type: ignore[no-any-return]

    async def _probe_until_failure(self, client: EtcdClient | GrpcEtcdClient) -> EtcdError:
        assert self.hang_detection_secs
        interval, timeout = self.hang_detection_secs / 3, self.hang_detection_secs * 2 / 3
        while True:
            await trio.sleep(interval)
            t0 = trio.current_time()
            with trio.move_on_after(timeout):
                try:
                    await client.range(self._range_start, self._range_end, limit=1, keys_only=True)
                except Exception as exc:  # EtcdError, or anything else: the probe failed
                    return self._probe_failed(f"probe failed: {type(exc).__name__}: {exc}")
                continue
            took = trio.current_time() - t0
            return self._probe_failed(f"etcd did not answer a probe within {took:.1f} s")

    def _probe_failed(self, detail: str) -> EtcdUnavailable:
        self.probe_failures += 1
        PROBE_FAILURES.inc()
        log.warning("etcd hang detected; dropping the watch", detail=detail)
        return EtcdUnavailable(detail)

    def _backoff(self, attempt: int) -> float:
        return retry_delay(attempt, self.backoff_base, self.backoff_cap)

    async def _set_connected(self, sink: EventSink, connected: bool, detail: str = "") -> None:
        if connected != self._connected:
            self._connected = connected
            await sink.send(ConnectionStatus(connected, detail))

    # --- list --------------------------------------------------------------------------------

    async def _resync(
        self, client: EtcdClient | GrpcEtcdClient, sink: EventSink, reason: str
    ) -> None:
        if self._last_resync_at is not None:
            # Do not hammer etcd with back-to-back full lists (libcalico-go waits 500 ms).
            await trio.sleep_until(self._last_resync_at + self.min_resync_interval)
        self._last_resync_at = trio.current_time()
        started = False
        listed: set[str] = set()
        batch: list[Update] = []
        revision = 0
        t0 = trio.current_time()
        # The next page is fetched while this one is converted: etcd (another process, often on
        # another core) builds the next reply meanwhile, instead of the two taking turns.
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            send, recv = trio.open_memory_channel[RangeResult | Exception](1)
            nursery.start_soon(self._fetch_pages, client, send)
            try:
                async with recv:
                    async for page in recv:
                        if isinstance(page, Exception):
                            raise page
                        if not started:
                            # Only once etcd answered: a list that cannot start is an outage,
                            # not a resync, and must not put the cache into "resync in
                            # progress".
                            await self._set_connected(sink, True)
                            self.resyncs += 1
                            log.info("etcd resync started", reason=reason, revision=page.revision)
                            await sink.send(ResyncStarted(reason))
                            started = True
                        revision = page.revision
                        for i, kv in enumerate(page.kvs):
                            if not kv.key.startswith(self.prefixes):
                                continue
                            listed.add(kv.key)
                            batch.extend(self._on_put(kv, None))
                            while len(batch) >= self.batch_size:
                                await sink.send(Updates(batch[: self.batch_size], revision))
                                batch = batch[self.batch_size :]
                            if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                                await trio.lowlevel.checkpoint()
            except Exception as exc:  # re-raised below, outside the nursery (not grouped)
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if batch:
            await sink.send(Updates(batch, revision))
        self._expander.forget_except(listed)
        self._need_prev_kv = False
        self._warm_catch_up = False  # a full list supersedes the warm start's catch-up
        self.revision = revision
        await sink.send(ResyncFinished(revision))
        log.info(
            "etcd resync finished",
            reason=reason,
            revision=revision,
            keys=len(listed),
            seconds=round(trio.current_time() - t0, 3),
        )

    async def _fetch_pages(
        self,
        client: EtcdClient | GrpcEtcdClient,
        send: trio.MemorySendChannel[RangeResult | Exception],
    ) -> None:
        """The list's pages into ``send``, one ahead of the converter; an error is sent too
        (and raised by the consumer with its own type, not wrapped in an exception group)."""
        async with send:
            try:
                pages = client.range_paginated(
                    self._range_start, page_size=self.page_size, range_end=self._range_end
                )
                async with contextlib.aclosing(pages):
                    async for page in pages:
                        await send.send(page)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the consumer stopped first (and raises its own error)
            except Exception as exc:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await send.send(exc)

    # --- watch -------------------------------------------------------------------------------

    async def _watch(self, client: EtcdClient | GrpcEtcdClient, sink: EventSink) -> bool:
        """Watch from ``self.revision + 1`` until the stream ends (returns whether it delivered
        anything) or fails (raises)."""
        assert self.revision is not None
        start = self.revision + 1
        delivered = False
        try:
            async with client.watch(
                self._range_start,
                self._range_end,
                start_revision=start,
                progress_notify=True,
                prev_kv=self._need_prev_kv,
                idle_timeout=self.watch_idle_timeout,
            ) as stream:
                self.watches_started += 1
                self._check_same_store(stream.cluster_id, stream.created_revision)
                await self._set_connected(sink, True)
                if self._warm_catch_up and self._catch_up_to is None:
                    self._catch_up_to = stream.created_revision or self.revision
                await self._maybe_caught_up(sink)
                log.debug("etcd watch started", start_revision=start, endpoint=stream.endpoint)
                async for resp in stream:
                    delivered = True
                    if resp.events:
                        await self._on_events(sink, resp.events)
                    elif resp.revision > self.revision:
                        # Progress notification: nothing else up to resp.revision is coming.
                        self.revision = resp.revision
                        await sink.send(Updates([], resp.revision))
                    await self._maybe_caught_up(sink)
        except WatchEnded as exc:
            log.info("etcd watch ended; re-watching", detail=str(exc), revision=self.revision)
        return delivered

    async def _maybe_caught_up(self, sink: EventSink) -> None:
        if not self._warm_catch_up or self._catch_up_to is None or self.revision is None:
            return
        if self.revision >= self._catch_up_to:
            self._warm_catch_up = False
            log.info("etcd warm start caught up", revision=self.revision)
            await sink.send(ResyncFinished(self.revision))

    def _check_same_store(self, cluster_id: str, created_revision: int) -> None:
        """Detect an etcd that is not the history we were following (resync if so)."""
        assert self.revision is not None
        if cluster_id:
            if self._cluster_id is not None and cluster_id != self._cluster_id:
                self._cluster_id = cluster_id
                raise _Resync("cluster-changed")
            self._cluster_id = cluster_id
        if created_revision and created_revision < self.revision:
            # Revisions never go down in one etcd history: this one was restored from an
            # older backup (or is another cluster), so events we hold may never have happened.
            raise _Resync("revision-went-backwards")

    async def _on_events(self, sink: EventSink, events: list[WatchEvent]) -> None:
        assert self.revision is not None
        started = time.monotonic()
        out: list[Update] = []
        for i, ev in enumerate(events):
            kv = ev.kv
            if not kv.key.startswith(self.prefixes):
                continue
            if ev.type == "DELETE":
                out.extend(self._on_delete(kv.key, ev.prev_kv, kv.mod_revision))
            else:
                out.extend(self._on_put(kv, ev.prev_kv))
            if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()
        # Events are never dropped for being "old": a resumed watch starts after our revision
        # anyway, and if a server ever sent an event at or below a revision it had already
        # notified, applying it is harmless while dropping it would lose it. The revision we
        # report just never goes backwards. Even with no updates (only filtered keys changed)
        # the revision moved on, so the batch is sent regardless.
        self.revision = max(self.revision, events[-1].kv.mod_revision)
        if out:  # per update, as the clients sample latency (O(1): a count and a sum)
            n = len(out)
            datastore_convert_secs._count.inc(n)
            datastore_convert_secs._sum.inc((time.monotonic() - started) * n)
        await sink.send(Updates(out, self.revision))

    # --- conversion --------------------------------------------------------------------------

    def _on_put(self, kv: KeyValue, prev: KeyValue | None) -> list[Update]:
        if prev is not None and self._need_prev_kv:
            self._seed(prev)
        produced = self._expander.expand(kv.key, self._decode(kv.key, kv.value, kv.mod_revision))
        return _stamped(produced, kv.mod_revision)

    def _on_delete(self, key: str, prev: KeyValue | None, revision: int) -> list[Update]:
        if prev is not None and self._need_prev_kv:
            self._seed(prev)
        return _stamped(self._expander.delete(key), revision)

    def _seed(self, prev: KeyValue) -> None:
        """Teach the expander what the previous value produced (warm start only)."""
        self._expander.expand(prev.key, self._decode(prev.key, prev.value, None, count=False))

    def _decode(
        self, key: str, raw: bytes, revision: int | None, *, count: bool = True
    ) -> list[Update]:
        """Model updates for one etcd value; [] (after logging/counting) if it is invalid.

        This is the guard for one key: *any* exception while decoding or converting its value
        (a ``RecursionError``, a converter bug) makes that key invalid — deleted for clients —
        and never stops the sync of the others."""
        try:
            obj = jsonlimit.loads(raw)
        except ValueError as exc:  # includes UnicodeDecodeError and TooDeep
            return self._invalid(key, revision, f"value is not valid JSON: {exc}", count)
        except Exception as exc:
            reason = f"value cannot be decoded: {short_repr(exc)}"
            return self._invalid(key, revision, reason, count, exc_info=exc)
        if not isinstance(obj, dict):
            return self._invalid(
                key, revision, f"value is a JSON {type(obj).__name__}, not an object", count
            )
        try:
            return self._convert(key, obj)
        except self._invalid_error as exc:
            return self._invalid(key, revision, str(exc), count)
        except Exception as exc:
            # A converter bug must not stop the sync of everything else; make it loud (one
            # record, with the traceback).
            reason = f"converter error: {short_repr(exc)}"
            return self._invalid(key, revision, reason, count, exc_info=exc)

    def _invalid(
        self,
        key: str,
        revision: int | None,
        reason: str,
        count: bool,
        exc_info: BaseException | None = None,
    ) -> list[Update]:
        if count:
            self.invalid_values += 1
            INVALID_VALUES.inc()
            log.warning(
                "invalid etcd value", key=key, revision=revision, reason=reason, exc_info=exc_info
            )
        return []


def _stamped(updates: list[Update], revision: int) -> list[Update]:
    """The updates with the etcd revision that produced them (sent per KV to Calico's
    clients; libcalico-go's etcd backend reports a key's mod_revision the same way)."""
    rev = str(revision)
    if len(updates) == 1:  # nearly always (one key per resource): no comprehension
        return [Update(updates[0].key, updates[0].value, rev)]
    return [Update(u.key, u.value, rev) for u in updates]
