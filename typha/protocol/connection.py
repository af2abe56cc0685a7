"""Sans-IO connection state machines for both ends of a sync connection.

Bytes go in with ``receive_data``; typed messages come out of ``next_event`` (``None`` means
more bytes are needed). Messages go in to ``send`` and frame bytes come out. Neither class
touches a socket, so every edge case is a plain unit test.

Server states: ``AWAIT_HELLO`` → ``STREAMING`` → ``CLOSED``.
Client states: ``START`` → ``AWAIT_SERVER_HELLO`` → ``STREAMING`` → ``CLOSED``.
A message that is not allowed in the current state raises :class:`UnexpectedMessage`;
the state then becomes ``CLOSED``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .codec import decode_payload, encode_payload
from .errors import HandshakeRejected, ProtocolError, UnexpectedMessage
from .framing import (
    CLIENT_DEFAULT_MAX_FRAME,
    SERVER_MAX_INBOUND_FRAME,
    FrameDecoder,
    frame,
)
from .messages import (
    COMPRESSION_ZSTD,
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    KNOWN_COMPRESSIONS,
    KNOWN_FEATURES,
    PROTOCOL_VERSION,
    BatchDone,
    ClientHello,
    Goodbye,
    KVKind,
    KVs,
    Message,
    Ping,
    Pong,
    ResumeToken,
    ServerHello,
    SyncStatusMsg,
)


class State(enum.Enum):
    START = "start"
    AWAIT_HELLO = "await-hello"
    AWAIT_SERVER_HELLO = "await-server-hello"
    STREAMING = "streaming"
    CLOSED = "closed"


class _Endpoint:
    def __init__(
        self,
        decoder: FrameDecoder,
        state: State,
        decode: Callable[[bytes], Message] = decode_payload,
    ) -> None:
        self._decoder = decoder
        self.state = state
        self._decode = decode

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._decoder.feed(data)

    def discard_input(self) -> None:
        """The connection is over: free the unread input (up to a whole frame) at once."""
        self._decoder.discard()

    @property
    def buffered(self) -> int:
        """Input bytes held (not yet a whole frame): for the server's memory budget."""
        return self._decoder.buffered

    def next_event(self) -> Message | None:
        """The next message, ``None`` if more bytes are needed. Raises ProtocolError."""
        if self.state is State.CLOSED:
            return None
        try:
            payload = self._decoder.next_payload()
            if payload is None:
                return None
            msg = self._decode(payload)
            self._check_incoming(msg)
        except ProtocolError:
            self.state = State.CLOSED
            raise
        return msg

    def check(self, msg: Message) -> None:
        """Apply the state rules to a message decoded elsewhere (a header-only reader)."""
        try:
            self._check_incoming(msg)
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def _check_incoming(self, msg: Message) -> None:
        raise NotImplementedError


class ServerProtocol(_Endpoint):
    """The server's view of one client connection."""

    def __init__(self, max_inbound_frame: int = SERVER_MAX_INBOUND_FRAME) -> None:
        super().__init__(FrameDecoder(max_inbound_frame, allow_compressed=False), State.AWAIT_HELLO)
        self.hello: ClientHello | None = None
        self.compression: str | None = None
        self.features: frozenset[str] = frozenset()

    def _check_incoming(self, msg: Message) -> None:
        if self.state is State.AWAIT_HELLO:
            if not isinstance(msg, ClientHello):
                raise UnexpectedMessage(f"expected ClientHello, got {type(msg).__name__}")
            return
        if self.state is State.STREAMING and isinstance(msg, Pong):
            return
        raise UnexpectedMessage(f"{type(msg).__name__} not allowed from a client here")

    def accept(
        self,
        hello: ClientHello,
        *,
        server_version: str,
        epoch: int,
        conn_id: int,
        resumed: bool,
        resume_seq: int | None = None,
        offer_compression: bool = True,
    ) -> bytes:
        """Complete the handshake: negotiate and return the ServerHello frame."""
        if self.state is not State.AWAIT_HELLO:
            raise UnexpectedMessage("handshake already done")
        if hello.protocol < 1:
            self.state = State.CLOSED
            raise HandshakeRejected(f"unsupported protocol version {hello.protocol}")
        self.hello = hello
        if offer_compression and COMPRESSION_ZSTD in hello.compressions:
            self.compression = COMPRESSION_ZSTD
        self.features = frozenset(hello.features) & KNOWN_FEATURES
        self.state = State.STREAMING
        return frame(
            encode_payload(
                ServerHello(
                    server_version=server_version,
                    epoch=epoch,
                    syncer=hello.syncer,
                    compression=self.compression,
                    features=tuple(sorted(self.features)),
                    conn_id=conn_id,
                    resumed=resumed,
                    resume_seq=resume_seq,
                    protocol=min(hello.protocol, PROTOCOL_VERSION),
                )
            )
        )

    def send(self, msg: Message) -> bytes:
        """Encode a control message, refusing what the client did not advertise.

        Sending stays possible after the client broke the protocol, so that the server can
        still say Goodbye with the reason.
        """
        if self.hello is None:
            raise UnexpectedMessage(f"cannot send {type(msg).__name__} before the handshake")
        if isinstance(msg, Goodbye) and FEATURE_GOODBYE not in self.features:
            raise UnexpectedMessage("client did not advertise Goodbye support")
        catchup = isinstance(msg, KVs | BatchDone) and msg.kind is KVKind.CATCHUP
        if catchup and FEATURE_CATCHUP not in self.features:
            raise UnexpectedMessage("client did not advertise catch-up support")
        if not isinstance(msg, Ping | Goodbye | SyncStatusMsg | KVs | BatchDone):
            raise UnexpectedMessage(f"a server does not send {type(msg).__name__}")
        return frame(encode_payload(msg))

    @property
    def supports(self) -> frozenset[str]:
        return self.features

    def close(self) -> None:
        self.state = State.CLOSED


class ClientProtocol(_Endpoint):
    """The client's end of a connection."""

    def __init__(
        self,
        max_frame: int = CLIENT_DEFAULT_MAX_FRAME,
        decode: Callable[[bytes], Message] = decode_payload,
    ) -> None:
        # ``decode`` may be a cache shared by many clients of one process (the load tool):
        # the state rules still run for every client.
        super().__init__(FrameDecoder(max_frame, allow_compressed=True), State.START, decode)
        self.hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None

    def start(
        self,
        *,
        node: str,
        syncer: str,
        client_version: str = "",
        info: str = "",
        compressions: tuple[str, ...] = (COMPRESSION_ZSTD,),
        features: tuple[str, ...] = tuple(sorted(KNOWN_FEATURES)),
        resume: ResumeToken | None = None,
        conn_id: int = 0,
    ) -> bytes:
        """The ClientHello frame that opens the connection."""
        if self.state is not State.START:
            raise UnexpectedMessage("hello already sent")
        self.hello = ClientHello(
            node=node,
            syncer=syncer,
            client_version=client_version,
            info=info,
            compressions=tuple(c for c in compressions if c in KNOWN_COMPRESSIONS),
            features=tuple(features),
            resume=resume,
            conn_id=conn_id,
        )
        self.state = State.AWAIT_SERVER_HELLO
        return frame(encode_payload(self.hello))

    def _check_incoming(self, msg: Message) -> None:
        assert self.hello is not None or self.state is State.START
        if self.state is State.AWAIT_SERVER_HELLO:
            if not isinstance(msg, ServerHello):
                raise UnexpectedMessage(f"expected ServerHello, got {type(msg).__name__}")
            assert self.hello is not None
            # An empty syncer asks for felix, and the server echoes the one it serves.
            if msg.syncer != (self.hello.syncer or "felix"):
                raise HandshakeRejected(
                    f"server chose syncer {msg.syncer!r}, asked for {self.hello.syncer!r}"
                )
            if msg.compression is not None and msg.compression not in self.hello.compressions:
                raise HandshakeRejected(f"server chose unoffered compression {msg.compression!r}")
            extra = set(msg.features) - set(self.hello.features)
            if extra:
                raise HandshakeRejected(f"server accepted unoffered features {sorted(extra)}")
            self.server_hello = msg
            self.state = State.STREAMING
            return
        if self.state is not State.STREAMING:
            raise UnexpectedMessage(f"{type(msg).__name__} before the handshake")
        assert self.server_hello is not None
        if isinstance(msg, ServerHello | ClientHello | Pong):
            raise UnexpectedMessage(f"{type(msg).__name__} not allowed from a server here")
        if isinstance(msg, Goodbye) and FEATURE_GOODBYE not in self.server_hello.features:
            raise UnexpectedMessage("Goodbye without negotiating it")
        if (
            isinstance(msg, KVs | BatchDone)
            and msg.kind is KVKind.CATCHUP
            and FEATURE_CATCHUP not in self.server_hello.features
        ):
            raise UnexpectedMessage("catch-up batch without negotiating it")

    def pong(self, ping: Ping, seq: int) -> bytes:
        if self.state is not State.STREAMING:
            raise UnexpectedMessage("pong before the handshake")
        return frame(encode_payload(Pong(ping.timestamp, seq)))

    def close(self) -> None:
        self.state = State.CLOSED
