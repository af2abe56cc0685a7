"""Byte transports under a connection: plain TCP with a non-blocking fast path, or TLS.

The fast path matters: one trio ``send_all`` costs ~22 µs, a raw non-blocking ``write`` ~2 µs
(dependencies.md §9, anchors.md §6). The shared fan-out writes the same bytes to every caught-up
client with ``write_nowait`` and hands only the remainder of a short write to the client's own
writer task.
"""

from __future__ import annotations

import contextlib
import os
import socket

import trio


class WriteTimeout(Exception):
    """A client made no write progress for the write timeout."""


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

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


Transport = SocketTransport | StreamTransport
