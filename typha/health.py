"""Health aggregation with Typha's semantics.

Reporters report periodically; each has a timeout. Liveness: every reporter has reported within
its timeout and says live. Readiness: additionally every reporter says ready (the caches are
ready only when their syncer view is in sync with the datastore).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Reporter:
    name: str
    timeout: float
    live: bool = True
    ready: bool = False
    reported_at: float | None = None
    detail: str = ""


@dataclass
class HealthAggregator:
    clock: Callable[[], float] = time.monotonic
    _reporters: dict[str, _Reporter] = field(default_factory=dict)

    def register(self, name: str, timeout: float) -> None:
        self._reporters[name] = _Reporter(name, timeout)

    def report(self, name: str, *, live: bool = True, ready: bool = True, detail: str = "") -> None:
        r = self._reporters[name]
        r.live, r.ready, r.detail, r.reported_at = live, ready, detail, self.clock()

    def _fresh(self, r: _Reporter) -> bool:
        return r.reported_at is not None and self.clock() - r.reported_at <= r.timeout

    def live(self) -> bool:
        return all(self._fresh(r) and r.live for r in self._reporters.values())

    def ready(self) -> bool:
        return all(self._fresh(r) and r.live and r.ready for r in self._reporters.values())

    def table(self) -> str:
        rows = [f"{'COMPONENT':<34} {'TIMEOUT':>8} {'LIVENESS':>9} {'READINESS':>10}  DETAIL"]
        for r in self._reporters.values():
            fresh = self._fresh(r)
            rows.append(
                f"{r.name:<34} {r.timeout:>7g}s {'reporting' if fresh and r.live else 'STALE' if not fresh else 'NOT LIVE':>9} "  # noqa: E501
                f"{'ready' if fresh and r.ready else '-':>10}  {r.detail}"
            )
        return "\n".join(rows) + "\n"
