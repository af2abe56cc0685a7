"""The server side of one gob connection, sans-IO: bytes in, events and bytes out.

The sequence (Go Typha's, which Calico's clients expect)::

    client: ClientHello
    server: [preamble] ServerHello
      no snappy:  the snapshot as MsgKVs, then deltas, statuses and pings
      snappy:     DecoderRestart("snappy")       -- then wait for the client's ACK
                  [snappy stream: preamble, snapshot MsgKVs..., DecoderRestart("snappy")]
                                                  -- wait for the second ACK
                  [new snappy stream: preamble, deltas, statuses, pings]

Nothing in the new format is written before the ACK: the client's old decoder may have read
ahead into its buffer. The session hands out the very bytes objects of shared
``EncodedPart``s, so one encoding serves every connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import Enum, auto

from ..errors import HandshakeRejected, UnexpectedMessage
from ..hello_limits import check_hello_strings
from .decoder import DEFAULT_MAX_MESSAGE, GobDecoder
from .encoder import (
    PREAMBLE,
    SNAPPY_PREAMBLE,
    EncodedPart,
    encode_decoder_restart,
    encode_server_hello,
    ping_part,
    snapshot_end_part,
    status_part,
)
from .messages import (
    COMPRESSION_SNAPPY,
    SYNCER_TYPES,
    Ack,
    ClientHello,
    DecoderRestart,
    GoTime,
    Pong,
    ServerHello,
)

# Until the hello has been accepted a connection may buffer at most this much (a Go client's
# hello is well under 1 KiB); afterwards one client message may be 1 MiB, as in Go Typha.
HANDSHAKE_MAX_MESSAGE = 64 << 10
RESTART_REASON = "enable compression: snappy;send binary snapshot"


class State(Enum):
    AWAIT_HELLO = auto()
    AWAIT_ACK_HELLO = auto()  # DecoderRestart sent after the ServerHello
    SNAPSHOT = auto()  # the server may write the snapshot
    AWAIT_ACK_SNAPSHOT = auto()  # the snappy snapshot ended with a DecoderRestart
    STREAMING = auto()  # deltas, statuses, pings; the client sends pongs


@dataclass(frozen=True, slots=True)
class HelloAccepted:
    hello: ClientHello
    syncer_type: str
    compression: str  # "snappy" or ""


@dataclass(frozen=True, slots=True)
class SnapshotReady:
    """Write the snapshot now (``send_snapshot``), then ``end_snapshot``."""


@dataclass(frozen=True, slots=True)
class StreamingReady:
    """The snapshot is complete on the client: deltas, statuses and pings may follow."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    pong: Pong


Event = HelloAccepted | SnapshotReady | StreamingReady | PongReceived


class GobServerSession:
    def __init__(
        self,
        *,
        server_version: str,
        conn_id: int,
        syncer_types: Collection[str] = SYNCER_TYPES,
        allow_snappy: bool = True,
        max_message: int = DEFAULT_MAX_MESSAGE,
        handshake_max_message: int = HANDSHAKE_MAX_MESSAGE,
    ) -> None:
        self._version = server_version
        self._conn_id = conn_id
        self._syncer_types = syncer_types
        self._allow_snappy = allow_snappy
        self._max_message = max_message
        self._decoder = GobDecoder(max_message=min(handshake_max_message, max_message))
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self.state = State.AWAIT_HELLO
        self.compression = ""
        self.syncer_type = ""
        self._snappy_out = False  # whether the current output stream is snappy

    @property
    def buffered(self) -> int:
        """Input bytes held (not yet a whole message): for the server's memory budget."""
        return self._decoder.buffered

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    # --- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``next_event`` decodes them."""
        self._decoder.feed(data)

    def discard_input(self) -> None:
        """The connection is over: free the unread input (up to 1 MiB) at once."""
        self._decoder.discard()

    def next_event(self) -> Event | None:
        """The next event, or None until more bytes arrive. Handle each event (e.g. write the
        snapshot on ``SnapshotReady``) before asking for the next: a message is judged in the
        state the previous events left. Raises ``ProtocolError``: close the connection."""
        if not self._events:
            msg = self._decoder.next_message()
            if msg is None:
                return None
            self._events.extend(self._handle(msg))
        return self._events.popleft()

    def events(self, data: bytes = b"") -> list[Event]:
        """Feed ``data`` and take all events at once (when no event needs handling between)."""
        self.receive_data(data)
        out = []
        while (event := self.next_event()) is not None:
            out.append(event)
        return out

    def _handle(self, msg: object) -> list[Event]:
        state = self.state
        if state is State.AWAIT_HELLO:
            if not isinstance(msg, ClientHello):
                raise UnexpectedMessage(
                    f"gob: the first message must be a hello, not {type(msg).__name__}"
                )
            return self._hello(msg)
        if state in (State.AWAIT_ACK_HELLO, State.AWAIT_ACK_SNAPSHOT):
            if not isinstance(msg, Ack):
                raise UnexpectedMessage(f"gob: expected the client's ACK, got {type(msg).__name__}")
            self._out.append(SNAPPY_PREAMBLE)
            self._snappy_out = True
            if state is State.AWAIT_ACK_HELLO:
                self.state = State.SNAPSHOT
                return [SnapshotReady()]
            self.state = State.STREAMING
            return [StreamingReady()]
        if isinstance(msg, Pong):
            return [PongReceived(msg)]
        raise UnexpectedMessage(f"gob: unexpected {type(msg).__name__} from the client")

    def _hello(self, hello: ClientHello) -> list[Event]:
        # The same caps as our msgpack hello's (Go Typha has none below its 1 MiB message).
        check_hello_strings(
            (
                ("Hostname", hello.hostname),
                ("SyncerType", hello.syncer_type),
                ("Version", hello.version),
                ("Info", hello.info),
            ),
            (("SupportedCompressionAlgorithms", hello.supported_compression),),
            error=HandshakeRejected,
        )
        # An empty SyncerType is an old Felix.
        syncer = hello.syncer_type or "felix"
        if syncer not in self._syncer_types:
            raise HandshakeRejected(f"gob: unknown syncer type {syncer[:64]!r}")
        if not hello.supports_modern_policy_keys:
            raise HandshakeRejected("gob: the client does not support modern policy keys")
        self.syncer_type = syncer
        # Compression needs the decoder restart (Go's client offers snappy only with it).
        if (
            self._allow_snappy
            and hello.supports_decoder_restart
            and COMPRESSION_SNAPPY in hello.supported_compression
        ):
            self.compression = COMPRESSION_SNAPPY
        self._decoder.max_message = self._max_message
        self._out.append(PREAMBLE)
        self._out.append(
            encode_server_hello(
                ServerHello(
                    version=self._version,
                    syncer_type=syncer,
                    supports_node_resource_updates=True,
                    server_conn_id=self._conn_id,
                )
            )
        )
        accepted = HelloAccepted(hello, syncer, self.compression)
        if self.compression:
            self._out.append(
                encode_decoder_restart(DecoderRestart(RESTART_REASON, self.compression))
            )
            self.state = State.AWAIT_ACK_HELLO
            return [accepted]
        self.state = State.SNAPSHOT
        return [accepted, SnapshotReady()]

    # --- output -----------------------------------------------------------------------

    def _write(self, part: EncodedPart) -> None:
        self._out.append(part.snappy if self._snappy_out else part.plain)

    def send_snapshot(self, parts: Iterable[EncodedPart]) -> None:
        self._expect(State.SNAPSHOT, "send the snapshot")
        for part in parts:
            self._write(part)

    def end_snapshot(self) -> list[Event]:
        """The snapshot is written. Plain: streaming starts now; snappy: after the ACK."""
        self._expect(State.SNAPSHOT, "end the snapshot")
        if self.compression:
            self._write(snapshot_end_part())
            self.state = State.AWAIT_ACK_SNAPSHOT
            return []
        self.state = State.STREAMING
        return [StreamingReady()]

    def send(self, part: EncodedPart) -> None:
        """Shared deltas (or any shared message run) after the snapshot."""
        self._expect(State.STREAMING, "send deltas")
        self._write(part)

    def send_status(self, status: int) -> None:
        self._expect(State.STREAMING, "send a status")
        self._write(status_part(status))

    def send_ping(self, timestamp: GoTime | EncodedPart) -> None:
        """A MsgPing: from a timestamp, or a ``ping_part`` shared by many connections."""
        self._expect(State.STREAMING, "ping")
        self._write(timestamp if isinstance(timestamp, EncodedPart) else ping_part(timestamp))

    @property
    def can_stream(self) -> bool:
        return self.state is State.STREAMING

    def _expect(self, state: State, what: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"cannot {what} in state {self.state.name}")
