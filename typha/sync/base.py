"""The narrow waist between datastores and the snapshot cache.

A datastore (etcd v3, Kubernetes, in-memory) turns its watch into a stream of events:

* ``ResyncStarted`` — a full list begins. Everything the datastore emits until ``ResyncFinished``
  is the complete current state.
* ``Updates`` — model key/value updates (value ``None`` = deletion), already converted into the
  Calico model keys Felix expects (``typha.model.keys``), with the datastore revision reached.
* ``ResyncFinished`` — the list is complete. The cache, not the datastore, deletes every key that
  was not seen during the resync and was not changed since, so that etcd and Kubernetes share one
  resync mechanism and clients only ever see real changes.
* ``ConnectionStatus`` — the datastore became reachable/unreachable (drives readiness and the
  WaitForDatastore status; the cache keeps serving what it has).

Scopes: a datastore with several independent watches (Kubernetes: one per resource type) tags
its updates with a ``scope`` (the resource type) and may relist one scope alone:
``ResyncStarted(scope=s)`` … ``Updates(…, scope=s)`` … ``ResyncFinished(scope=s)`` deletes only
keys last written under scope ``s`` that the relist did not list. A relist of one scope does not
change the sync status clients see; its differences arrive as ordinary deltas. The unscoped
resync (``scope=None``) covers everything and drives the status (resync → in-sync).

Warm restart: started with ``start_revision``, a datastore watches from there without a list
and sends ``ResyncFinished(revision)`` *without* a ResyncStarted once it has caught up with the
datastore; the cache then only marks itself in sync (there is nothing to diff). If the revision
is gone (compacted), it resyncs normally (ResyncStarted … ResyncFinished).

A datastore emits events by calling ``await sink.send(event)`` on the sink it is given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Update:
    """One model key update. ``value is None`` means the key was deleted (or is invalid).

    ``revision`` is the datastore revision of the object it came from (etcd's mod_revision as
    a string), when the datastore stamps it; Calico's protocol sends it with each KV, and, for
    v3 resources (``/calico/resources/v3/...`` keys), also as the V3ResourceVersion.
    """

    key: str
    value: Any
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class Updates:
    """A batch of updates that together bring the state to ``revision``.

    ``revision`` is the datastore revision after this batch: an ``int`` for etcd (a global
    revision, usable for cross-replica resume) or ``None`` where the datastore has no global
    revision (Kubernetes: resourceVersions are per resource type).
    """

    updates: Sequence[Update]
    revision: int | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class ResyncStarted:
    """A full list is starting; ``reason`` is for logs and metrics."""

    reason: str = "initial"
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class ResyncFinished:
    """The full list has been emitted; keys not seen since ResyncStarted are gone."""

    revision: int | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    connected: bool
    detail: str = ""


DatastoreEvent = Updates | ResyncStarted | ResyncFinished | ConnectionStatus


@runtime_checkable
class EventSink(Protocol):
    async def send(self, event: DatastoreEvent) -> None: ...


class Datastore(Protocol):
    """A source of model updates. ``run`` lists, watches and resyncs until cancelled.

    ``run`` must never return on datastore errors: it reports ``ConnectionStatus(False)``,
    backs off and retries. ``start_revision`` (etcd only) asks it to watch from a saved
    revision instead of listing (warm restart); it falls back to a resync if that revision is
    gone.
    """

    name: str

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None: ...


@dataclass(slots=True)
class ResourceExpander:
    """Tracks which model keys each source resource produced, so that an update or a deletion
    of the source also deletes the model keys it no longer produces.

    One v3 resource can become several model keys (a Node becomes host config keys, a metadata
    key, a wireguard key and the passthrough resource; a FelixConfiguration becomes one config
    key per field). ``expand`` returns the updates to emit for the new set of outputs.
    """

    _outputs: dict[str, frozenset[str]] = field(default_factory=dict)

    def expand(self, source: str, produced: Iterable[Update]) -> list[Update]:
        if type(produced) is list and len(produced) == 1:
            # The common case (a WorkloadEndpoint, listed or changed): one key, the same as
            # before or new. The same result as below, without the set arithmetic.
            only = produced[0]
            old = self._outputs.get(source)
            if only.value is not None and (old is None or (len(old) == 1 and only.key in old)):
                if old is None:
                    self._outputs[source] = frozenset((only.key,))
                return [only]
        produced = list(produced)
        new_keys = frozenset(u.key for u in produced if u.value is not None)
        old_keys = self._outputs.get(source, frozenset())
        out = list(produced)
        for gone in old_keys - new_keys:
            if not any(u.key == gone for u in produced):
                out.append(Update(gone, None))
        if new_keys:
            self._outputs[source] = new_keys
        else:
            self._outputs.pop(source, None)
        return out

    def delete(self, source: str) -> list[Update]:
        return [Update(k, None) for k in sorted(self._outputs.pop(source, frozenset()))]

    def sources(self) -> set[str]:
        return set(self._outputs)

    def forget_except(self, keep: set[str]) -> None:
        """After a resync, forget sources that were not listed (the cache deletes their keys)."""
        for source in list(self._outputs):
            if source not in keep:
                del self._outputs[source]


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter" (half fixed, half random, capped), for the
    datastores' retries: ``attempt`` 1 waits about ``base``, doubling up to ``cap``."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def short_repr(exc: BaseException, limit: int = 300) -> str:
    """``repr(exc)`` cut to ``limit`` characters, for a log line about an invalid value. Never
    raises: a deep object among an exception's arguments must not break the log line."""
    try:
        text = repr(exc)
    except Exception:
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
