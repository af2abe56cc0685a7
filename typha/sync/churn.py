"""Churn filter: drop datastore changes that do not change what clients receive.

Most Kubernetes writes are irrelevant to Calico: kubelet status updates (conditions,
containerStatuses), heartbeats, ``managedFields`` and ``resourceVersion`` bumps, annotation
churn from other controllers. The converters already ignore those fields, so such a change
converts to exactly the same model updates as before. This filter remembers, per source
object, a 64-bit digest of its converted output and drops a change whose output digest is
unchanged — before the cache has to encode and compare every value — counting each skipped
change by reason in ``typha_updates_skipped_by_reason{reason=…}``:

* ``status-only`` — only ``status`` differed;
* ``metadata-only`` — only metadata differed (labels/annotations Calico does not use,
  finalizers, or just ``resourceVersion``/``managedFields``);
* ``no-op-conversion`` — ``spec`` (or another top-level field) differed, but not the output;
* ``not-for-felix`` — the object produces no model keys at all (host-networked or
  unscheduled pods, kinds Typha does not serve), before and after;
* ``invalid`` — the object was invalid before and still is.

The reason is classified by comparing digests of the old and new object's sections (status;
metadata without ``resourceVersion``/``managedFields``; everything else), so no old object is
kept: per source the filter stores four integers.

Lists (initial sync and relists) call :meth:`ChurnFilter.check` with ``force=True``: every key
must reach the cache during a resync (the cache deletes what a resync did not list), and the
cache's own byte comparison then drops the unchanged ones (``typha_updates_skipped``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from typha import metrics
from typha.sync.base import Update

STATUS_ONLY = "status-only"
METADATA_ONLY = "metadata-only"
NO_OP_CONVERSION = "no-op-conversion"
NOT_FOR_FELIX = "not-for-felix"
INVALID = "invalid"
REASONS: tuple[str, ...] = (STATUS_ONLY, METADATA_ONLY, NO_OP_CONVERSION, NOT_FOR_FELIX, INVALID)

# Metadata fields that change on every write (or with every field manager's write) and never
# matter to Calico by themselves.
VOLATILE_METADATA = frozenset({"resourceVersion", "managedFields"})
_NOT_SPEC = frozenset({"metadata", "status", "kind", "apiVersion"})

# Output digests of the two outputs that are not a list of updates.
_INVALID_DIGEST = -1
_EMPTY_DIGEST = -2

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


class _LabelledCounter(Protocol):
    def labels(self, *labelvalues: str) -> Any: ...


def _digest(value: Any) -> int:
    try:
        return hash(_packer.pack(value))
    except (TypeError, ValueError, OverflowError):
        return hash(repr(value))


def output_digest(produced: Sequence[Update] | None) -> int:
    """Digest of a converter's output (None = the object was invalid)."""
    if produced is None:
        return _INVALID_DIGEST
    if not produced:
        return _EMPTY_DIGEST
    return _digest([(u.key, u.value) for u in produced])


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the filter remembers about one source object."""

    output: int
    metadata: int
    status: int
    rest: int


def fingerprint(obj: dict[str, Any], produced: Sequence[Update] | None) -> Fingerprint:
    meta = obj.get("metadata") or {}
    stable_meta = {k: v for k, v in meta.items() if k not in VOLATILE_METADATA}
    rest = {k: v for k, v in obj.items() if k not in _NOT_SPEC}
    return Fingerprint(
        output_digest(produced),
        _digest(stable_meta),
        _digest(obj.get("status")),
        _digest(rest),
    )


def classify(old: Fingerprint | None, new: Fingerprint) -> str:
    """Why a change whose output did not change is irrelevant (see module doc)."""
    if new.output == _EMPTY_DIGEST and (old is None or old.output == _EMPTY_DIGEST):
        return NOT_FOR_FELIX
    if new.output == _INVALID_DIGEST:
        return INVALID
    if old is None:
        return NO_OP_CONVERSION
    if old.rest != new.rest:
        return NO_OP_CONVERSION
    if old.status != new.status:
        return NO_OP_CONVERSION if old.metadata != new.metadata else STATUS_ONLY
    return METADATA_ONLY


@dataclass
class ChurnFilter:
    """Per-source memory of converted output for one resource type (one watch).

    ``skipped`` counts skipped changes by reason (also exported, labelled by reason, to
    ``counter``, by default ``typha_updates_skipped_by_reason``).
    """

    scope: str = ""
    counter: _LabelledCounter | None = field(default=metrics.updates_skipped_by_reason)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    _seen: dict[str, Fingerprint] = field(default_factory=dict, repr=False)

    def check(
        self,
        source: str,
        obj: dict[str, Any],
        produced: Sequence[Update] | None,
        *,
        force: bool = False,
    ) -> bool:
        """Record ``obj``'s output; True if it must be emitted (output changed, or ``force``),
        False (and counted) if the change is irrelevant to clients."""
        new = fingerprint(obj, produced)
        old = self._seen.get(source)
        self._seen[source] = new
        if force:
            return True
        if old is not None and old.output != new.output:
            return True
        if old is None and new.output not in (_EMPTY_DIGEST, _INVALID_DIGEST):
            return True
        self.count(classify(old, new))
        return False

    def deleted(self, source: str, *, changed_output: bool) -> None:
        """The source object was deleted; count it as skipped if that changed no key."""
        old = self._seen.pop(source, None)
        if not changed_output:
            self.count(
                NOT_FOR_FELIX if old is None or old.output == _EMPTY_DIGEST else NO_OP_CONVERSION
            )

    def count(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n
        if self.counter is not None:
            self.counter.labels(reason).inc(n)

    def forget(self, source: str) -> None:
        self._seen.pop(source, None)

    def forget_except(self, keep: Iterable[str]) -> None:
        """After a relist: forget sources that were not listed."""
        keep = keep if isinstance(keep, set | frozenset) else set(keep)
        for source in [s for s in self._seen if s not in keep]:
            del self._seen[source]

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)


def precreate_reasons(counter: _LabelledCounter = metrics.updates_skipped_by_reason) -> None:
    """Make every reason appear as 0 in /metrics from the start."""
    for reason in REASONS:
        counter.labels(reason)


precreate_reasons()
