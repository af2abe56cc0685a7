"""The server-wide budget for input buffered by clients that have not completed their hello.

Before its hello a client is unauthenticated (with mTLS, it passed the certificate check but
has not said who it is); each connection may buffer only a small amount (64 KiB for gob), and
all of them together at most ``limit`` bytes (docs/protocol.md, "Limits"), so that many
connections stalling half-way through a large declared message cannot exhaust memory. A
connection over the total is closed. ``total`` is exported as a metric for tests and operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typha import metrics

# 1,000 connections at the 64 KiB per-connection cap.
DEFAULT_LIMIT = 64 << 20


@dataclass
class InputBudget:
    limit: int = DEFAULT_LIMIT
    total: int = 0
    _held: dict[int, int] = field(default_factory=dict)

    def charge(self, owner: object, buffered: int) -> bool:
        """Record that ``owner`` now holds ``buffered`` bytes; False if that breaks the total
        (the caller closes the connection, then calls ``release``)."""
        key = id(owner)
        self.total += buffered - self._held.get(key, 0)
        self._held[key] = buffered
        metrics.unauthenticated_buffered_bytes.set(self.total)
        return self.total <= self.limit

    def release(self, owner: object) -> None:
        held = self._held.pop(id(owner), 0)
        if held:
            self.total -= held
            metrics.unauthenticated_buffered_bytes.set(self.total)
