"""httpx-on-trio plumbing shared by the etcd and Kubernetes clients.

Both stream long-lived responses (watches) and both run under pytest's
``filterwarnings = error``, where a suspended async generator collected by the GC is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import httpx
import trio


class OneShotBody(httpx.AsyncByteStream):
    """A request body whose iterator is a plain object rather than an async generator.

    httpx's own body stream yields from an async generator; when a send fails after that
    ``yield`` (a refused TLS client certificate, a reset), httpcore abandons it suspended and trio
    reports a ResourceWarning when it is collected. A one-shot iterator cannot leak.
    """

    def __init__(self, data: bytes):
        self._data = data

    def __aiter__(self) -> _OneShot:  # type: ignore[override]
        return _OneShot(self._data)


class _OneShot:
    __slots__ = ("_data",)

    def __init__(self, data: bytes | None):
        self._data = data

    def __aiter__(self) -> _OneShot:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


async def finish_stream(chunks: AsyncGenerator[bytes, None]) -> None:
    """Run an abandoned httpx byte stream to its end so that no generator is left suspended.

    ``aiter_bytes`` sits on several nested async generators (httpx and httpcore); closing the
    outer one with ``aclose``/``aclosing`` leaves the inner ones suspended at their ``yield``,
    and trio reports each as a ResourceWarning when it is garbage collected. Resuming the chain
    inside an already-cancelled scope drains what httpcore has buffered and then raises
    Cancelled at the first network read, which unwinds and finishes every layer. The scope is
    shielded so that this also works while the calling task is itself being cancelled, and it
    is its own cancel, so nothing escapes.
    """
    with trio.CancelScope(shield=True) as scope:
        scope.cancel()
        with contextlib.suppress(StopAsyncIteration, httpx.HTTPError, RuntimeError):
            while True:
                await chunks.__anext__()
    await chunks.aclose()
