"""Who may write to a connection's socket right now: one explicit token.

A connection's bytes have two possible writers: its own writer task, and the shared fan-out,
which writes straight to the raw non-blocking socket from its own task. trio's guard against
two tasks sending on one stream at once does not see the fan-out's raw writes, so the rule
"one writer at a time" is this token's: whoever writes holds it, and taking a token that is
held raises :class:`WriteOwnershipError` instead of interleaving two writers' frames.

Holders: the connection's writer (from a wake-up until it goes idle again), the fan-out (for
one non-blocking write, without yielding), or the connection's teardown (for good: once
closed, the token is never free again, whoever held it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

WRITER = "writer"
FANOUT = "fan-out"
CLOSING = "closing"


class WriteOwnershipError(RuntimeError):
    """A second party tried to take a socket that someone else is writing to."""


class WriteToken:
    __slots__ = ("holder",)

    def __init__(self, holder: str | None = WRITER) -> None:
        # The writer holds it from the start: nobody else writes before the handshake is out.
        self.holder: str | None = holder

    @property
    def free(self) -> bool:
        return self.holder is None

    def take(self, who: str) -> None:
        if self.holder is not None:
            raise WriteOwnershipError(f"{who} cannot write: {self.holder} holds the socket")
        self.holder = who

    def release(self, who: str) -> None:
        if self.holder == CLOSING:
            return  # closed while ``who`` held it: it stays closed
        if self.holder != who:
            raise WriteOwnershipError(f"{who} releases a socket held by {self.holder}")
        self.holder = None

    def close(self) -> None:
        """Nobody writes any more (the connection is being torn down; its descriptor may be
        reused). Called from a task, never while the fan-out holds the token (it does not
        yield while it does)."""
        if self.holder == FANOUT:
            raise WriteOwnershipError("closing a socket the fan-out is writing to")
        self.holder = CLOSING

    @contextmanager
    def hold(self, who: str) -> Iterator[None]:
        """Hold the token for a block that does not yield to other tasks."""
        self.take(who)
        try:
            yield
        finally:
            self.release(who)
