"""A hand-driven protocol client for tests that need to misbehave or inspect every frame."""

from __future__ import annotations

import socket

import trio

from typha.protocol import ClientSession, ConnectionEnded, Message, ResumeToken


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.session: ClientSession | None = None
        self.events: list[Message] = []  # every message received, in order
        self.closed = False

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
        # The session checks the server's side of the protocol; it keeps no state of its
        # own, so that a test can send any resume token.
        self.session = ClientSession(
            node, syncer, features=features, compressions=compressions, keep_state=False
        )
        await self.stream.send_all(self.session.connect(resume=resume))

    def _next_message(self) -> Message | None:
        """The next message the session has ready (all are kept in ``events``).

        The session checks them as every client does; its pongs are never sent (a test that
        wants them answered uses a real client)."""
        while self.session is not None and (event := self.session.next_event()) is not None:
            if isinstance(event, ConnectionEnded):
                self.closed = True
            elif event.message is not None:
                self.events.append(event.message)
                return event.message
        return None

    async def _receive(self) -> None:
        data = await self.stream.receive_some(1 << 16)
        if self.session is None:
            assert not data, f"the server sent {len(data)} bytes before any hello"
            self.closed = True
            return
        self.session.receive_data(data)

    async def read_until(self, pred, timeout: float = 10.0) -> Message:
        """Read until a message satisfies ``pred``; returns it (all are kept in events)."""
        with trio.fail_after(timeout):
            while True:
                while (msg := self._next_message()) is not None:
                    if pred(msg):
                        return msg
                if self.closed:
                    raise EOFError("server closed")
                await self._receive()

    async def read_until_closed(self, timeout: float = 10.0) -> list[Message]:
        with trio.fail_after(timeout):
            while True:
                while self._next_message() is not None:
                    pass
                if self.closed:
                    return self.events
                try:
                    await self._receive()
                except trio.BrokenResourceError:
                    return self.events

    async def aclose(self) -> None:
        await self.stream.aclose()
