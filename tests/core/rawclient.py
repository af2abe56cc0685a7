"""A hand-driven protocol client for tests that need to misbehave or inspect every frame."""

from __future__ import annotations

import socket

import trio

from typha.protocol import ClientProtocol, Message, ResumeToken


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.proto = ClientProtocol()
        self.events: list[Message] = []

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            # A tiny receive window lets a test make the server's writes back up quickly.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    async def hello(
        self,
        node: str = "raw",
        syncer: str = "felix",
        *,
        resume: ResumeToken | None = None,
        features: tuple[str, ...] = ("catchup", "goodbye", "resume"),
        compressions: tuple[str, ...] = ("zstd",),
    ) -> None:
        await self.stream.send_all(
            self.proto.start(
                node=node,
                syncer=syncer,
                resume=resume,
                features=features,
                compressions=compressions,
            )
        )

    async def read_until(self, pred, timeout: float = 10.0) -> Message:
        """Read events until one satisfies ``pred``; returns it (all are kept in events)."""
        with trio.fail_after(timeout):
            while True:
                while (ev := self.proto.next_event()) is not None:
                    self.events.append(ev)
                    if pred(ev):
                        return ev
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise EOFError("server closed")
                self.proto.receive_data(data)

    async def read_until_closed(self, timeout: float = 10.0) -> list[Message]:
        with trio.fail_after(timeout):
            while True:
                while (ev := self.proto.next_event()) is not None:
                    self.events.append(ev)
                try:
                    data = await self.stream.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    return self.events
                if not data:
                    return self.events
                self.proto.receive_data(data)

    async def aclose(self) -> None:
        await self.stream.aclose()
