"""Byte transports under a connection: plain TCP with a non-blocking fast path, or TLS.

The fast path matters: one trio ``send_all`` costs ~22 µs, a raw non-blocking ``write`` ~2 µs
(docs/architecture.md, "Measured costs behind the design"). The shared fan-out writes the same
bytes to every caught-up client with ``write_nowait`` and hands only the remainder of a short
write to the client's own writer task.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence

import trio


class WriteTimeout(Exception):
    """A client made no write progress for the write timeout."""


# Buffers per writev(2) call (Linux's IOV_MAX).
_IOV_MAX = 1024
# TLS: buffers smaller than this are joined before send_all (one TLS record instead of many).
_COALESCE = 64 << 10

Buffers = Sequence[bytes | memoryview]


class SocketTransport:
    """Plain TCP. ``write_nowait`` writes straight to the non-blocking socket."""

    direct = True

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sock = stream.socket
        self._fd = self.sock.fileno()
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            host, port = self.sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes right now; returns the byte count (0 if full).

        Raises OSError if the connection is broken.
        """
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def write_nowait_vec(self, parts: Buffers) -> int:
        """One writev(2) of up to IOV_MAX buffers, taking what the kernel takes now (0 if
        full). Raises OSError if the connection is broken."""
        try:
            return os.writev(self._fd, parts[:_IOV_MAX])
        except BlockingIOError:
            return 0

    async def write_all(self, data: bytes | memoryview, timeout: float) -> int:
        """Write everything; raise WriteTimeout if no progress is made for ``timeout``."""
        view = memoryview(data)
        total = len(view)
        while view:
            n = self.write_nowait(view)
            if n:
                view = view[n:]
                continue
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_writable(self.sock)
            if scope.cancelled_caught:
                raise WriteTimeout(f"no write progress for {timeout:g}s")
        await trio.lowlevel.checkpoint()
        return total

    async def write_all_vec(self, parts: Buffers, timeout: float) -> int:
        """Write several buffers in order with writev(2): the shared snapshot and breadcrumb
        bytes go to the kernel without being joined into a per-client copy first."""
        views = [memoryview(p) for p in parts if len(p)]
        total = sum(len(v) for v in views)
        i = 0
        while i < len(views):
            try:
                n = os.writev(self._fd, views[i : i + _IOV_MAX])
            except BlockingIOError:
                n = 0
            if not n:
                with trio.move_on_after(timeout) as scope:
                    await trio.lowlevel.wait_writable(self.sock)
                if scope.cancelled_caught:
                    raise WriteTimeout(f"no write progress for {timeout:g}s")
                continue
            while n:
                size = len(views[i])
                if n >= size:
                    n -= size
                    i += 1
                else:
                    views[i] = views[i][n:]
                    n = 0
        await trio.lowlevel.checkpoint()
        return total

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


class StreamTransport:
    """Any trio stream (TLS). No fast path: each write goes through ``send_all``."""

    direct = False

    def __init__(self, stream: trio.abc.Stream, peer: str) -> None:
        self.stream = stream
        self.peer = peer

    def write_nowait(self, data: bytes | memoryview) -> int:
        raise NotImplementedError("stream transports have no direct path")

    async def write_all(self, data: bytes | memoryview, timeout: float) -> int:
        with trio.move_on_after(timeout) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise WriteTimeout(f"write did not finish in {timeout:g}s")
        return len(data)

    async def write_all_vec(self, parts: Buffers, timeout: float) -> int:
        """Write several buffers in order; small ones are joined (fewer TLS records), large
        ones (a snapshot) are sent as they are rather than copied."""
        total = 0
        small: list[bytes | memoryview] = []
        for part in parts:
            if len(part) < _COALESCE:
                small.append(part)
                continue
            if small:
                total += await self.write_all(b"".join(small), timeout)
                small = []
            total += await self.write_all(part, timeout)
        if small:
            total += await self.write_all(b"".join(small), timeout)
        return total

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


Transport = SocketTransport | StreamTransport
