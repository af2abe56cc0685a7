"""One node's sync session, sans-IO (h11's way): bytes in, events out, no I/O.

A :class:`ClientSession` outlives its connections. It keeps the position (epoch, sequence
number, revision) that the next connection's hello offers as a resume token, the sync status,
and (``keep_state``) the node's copy of the syncer's keys and values. For each connection the
I/O shell calls :meth:`~ClientSession.connect` and sends the hello it returns, feeds whatever
arrives to :meth:`~ClientSession.receive_data` (``b""`` at end of file), takes events from
:meth:`~ClientSession.next_event` and sends :meth:`~ClientSession.data_to_send` (the pongs).

The rules live here, once, for every client (the node agent, the load tool, the tests' raw
client):

* a resumed stream continues from the position the server confirms; otherwise a snapshot
  follows, and at its end every held key the snapshot did not list is deleted;
* snapshot data outside a snapshot, a snapshot or catch-up whose KV count differs from the
  server's total, or a catch-up that was not negotiated is a protocol error;
* a delta, or the end of a snapshot or catch-up, moves the position;
* nothing may follow a Goodbye: a message after it is a protocol error;
* end of file ends the connection (:class:`ConnectionEnded`), after a Goodbye or not.

A protocol error is raised by ``next_event`` once the events before it have been taken.

Two modes. ``header_only=False`` decodes every message (strict, through
:class:`~typha.protocol.connection.ClientProtocol`). ``header_only=True`` is the load tool's
fast path: frames are cut from the byte stream without being buffered, and of a KVs frame only
the header is read (:mod:`typha.protocol.kvheader`); a frame whose payload the ``sampler``
wants (deltas while in sync) is collected whole. Control messages are decoded in both modes and
checked by the same state rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

from .codec import decode_payload
from .connection import ClientProtocol
from .errors import ProtocolError
from .framing import CLIENT_DEFAULT_MAX_FRAME, FLAG_ZSTD
from .kvheader import KVS_PREFIX, is_kvs_payload, parse_kvs_header
from .messages import (
    COMPRESSION_ZSTD,
    FEATURE_CATCHUP,
    KNOWN_FEATURES,
    BatchDone,
    Goodbye,
    KVKind,
    KVs,
    Message,
    Ping,
    ResumeToken,
    ServerHello,
    SyncStatus,
    SyncStatusMsg,
)

# --- Events ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Handshake:
    """The server accepted the hello. ``resumed``: the stream continues from the session's
    position; otherwise a snapshot follows."""

    message: ServerHello
    resumed: bool


@dataclass(slots=True)
class KVBatch:
    """Keys and values of a delta, a snapshot chunk or a catch-up chunk (already applied to
    the session's state with ``keep_state``). In header-only mode ``kvs`` and ``message`` are
    None, ``payload`` holds the raw payload of a frame the sampler asked for, and consecutive
    deltas nobody sampled arrive as one batch: ``frames`` of them, ``count`` KVs in all, up to
    ``seq``/``revision``."""

    kind: KVKind
    seq: int
    revision: int | None
    count: int
    kvs: tuple[tuple[str, Any], ...] | None
    message: KVs | None = None
    payload: bytes | None = None
    samples: int = 0
    frames: int = 1


@dataclass(slots=True)
class BatchEnd:
    """A snapshot or catch-up is complete. ``deleted``: the keys the snapshot did not list,
    removed from the session's state (``keep_state`` only)."""

    message: BatchDone
    deleted: tuple[str, ...] = ()

    @property
    def kind(self) -> KVKind:
        return self.message.kind


@dataclass(slots=True)
class StatusChanged:
    message: SyncStatusMsg

    @property
    def status(self) -> SyncStatus:
        return self.message.status


@dataclass(slots=True)
class Pinged:
    """A ping; its pong (with the session's position) is waiting in ``data_to_send``."""

    message: Ping


@dataclass(slots=True)
class GoodbyeReceived:
    message: Goodbye


@dataclass(slots=True)
class ConnectionEnded:
    """End of file. ``after_goodbye``: the server said why before closing."""

    reason: str
    after_goodbye: bool
    message: None = None


Event = Handshake | KVBatch | BatchEnd | StatusChanged | Pinged | GoodbyeReceived | ConnectionEnded

_KINDS = (KVKind.DELTA, KVKind.SNAPSHOT, KVKind.CATCHUP)
_IN_SYNC = SyncStatus.IN_SYNC
_DELTA = KVKind.DELTA
_AUTO: Any = object()

# Header-only reader phases: frame header, KVs payload prefix, whole payload, skip payload.
_HDR, _PRE, _COLLECT, _SKIP = 0, 1, 2, 3
# Frames at most this long are control messages (or tiny KVs): buffer and decode them.
_SMALL = 64


class ClientSession:
    """See the module docstring."""

    def __init__(
        self,
        node: str,
        syncer: str = "felix",
        *,
        client_version: str = "",
        info: str = "",
        compressions: tuple[str, ...] = (COMPRESSION_ZSTD,),
        features: tuple[str, ...] = tuple(sorted(KNOWN_FEATURES)),
        resume: bool = True,
        keep_state: bool = True,
        conn_id: int = 0,
        max_frame: int = CLIENT_DEFAULT_MAX_FRAME,
        header_only: bool = False,
        sampler: Callable[[int], int] | None = None,
        decode: Callable[[bytes], Message] = decode_payload,
        decompressor: zstandard.ZstdDecompressor | None = None,
    ) -> None:
        self.node = node
        self.syncer = syncer
        self.client_version = client_version
        self.info = info
        self.compressions = tuple(compressions)
        self.features = tuple(features)
        self.resume = resume
        self.keep_state = keep_state
        self.conn_id = conn_id
        self.max_frame = max_frame
        self.header_only = header_only
        self.sampler = sampler
        self._decode = decode
        self._dctx = decompressor
        # The node's position and status, kept across connections.
        self.epoch: int | None = None
        self.seq = -1
        self.revision: int | None = None
        self.status: SyncStatus | None = None  # the last status any connection reported
        self._conn_status: SyncStatus | None = None  # ... this connection
        self.state: dict[str, Any] = {}
        # The current connection.
        self._proto: ClientProtocol | None = None
        self._events: deque[Event] = deque()
        self._error: ProtocolError | None = None
        self._out = bytearray()
        self._streaming = False
        self._goodbye = False
        self._ended = False
        self._in_snapshot = False
        self._seen: set[str] | None = None
        self._batch_count = 0
        self._pending_epoch: int | None = None
        # Header-only reader.
        self._ph = _HDR
        self._hb = bytearray()
        self._flen = 0
        self._zstd = False
        self._need = 0
        self._coll: bytearray | None = None
        self._pend: tuple[int, int, int | None, int] | None = None
        self._pend_samples = 0

    # --- Queries ---------------------------------------------------------------------------------

    @property
    def position(self) -> ResumeToken | None:
        if self.epoch is None:
            return None
        return ResumeToken(self.epoch, self.seq, self.revision)

    @property
    def in_sync(self) -> bool:
        """Whether the server said "in sync" on this connection (the status it reported on
        an earlier one stays in ``status``)."""
        return self._conn_status is SyncStatus.IN_SYNC

    @property
    def in_snapshot(self) -> bool:
        return self._in_snapshot

    @property
    def server_hello(self) -> ServerHello | None:
        return self._proto.server_hello if self._proto is not None else None

    # --- Driving ---------------------------------------------------------------------------------

    def connect(self, *, resume: ResumeToken | None = _AUTO) -> bytes:
        """A new connection: forget the previous one's progress, return the hello to send.

        The hello carries the session's position as a resume token (if ``resume``), unless
        ``resume`` is given here.
        """
        if self._in_snapshot:
            self._abandon_snapshot()
        self._events.clear()
        self._error = None
        self._out.clear()
        self._streaming = self._goodbye = self._ended = False
        self._batch_count = 0
        self._ph = _HDR
        self._hb.clear()
        self._coll = None
        self._pend = None
        self._need = 0
        self._conn_status = None
        token = self.position if self.resume else None
        if resume is not _AUTO:
            token = resume
        self._proto = ClientProtocol(self.max_frame, self._decode)
        return self._proto.start(
            node=self.node,
            syncer=self.syncer,
            client_version=self.client_version,
            info=self.info,
            compressions=self.compressions,
            features=self.features,
            resume=token,
            conn_id=self.conn_id,
        )

    def receive_data(self, data: bytes | memoryview) -> None:
        """Bytes from the server; ``b""`` means end of file. Parses them at once (the caller
        may reuse its buffer), queueing events and, on a protocol error, the error."""
        if self._error is not None or self._ended:
            return
        if self._proto is None:
            raise RuntimeError("receive_data before connect")
        if not data:
            self._on_eof()
            return
        try:
            if self.header_only:
                self._feed_header_only(memoryview(data), len(data))
            else:
                proto = self._proto
                proto.receive_data(data)
                while (msg := proto.next_event()) is not None:
                    self._on_message(msg)
        except ProtocolError as exc:
            self._error = exc
            if self._proto is not None:
                self._proto.close()

    def next_event(self) -> Event | None:
        """The next event, None if more bytes are needed. Raises the connection's
        ProtocolError once the events before it have been taken."""
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            err, self._error = self._error, None
            self._ended = True
            raise err
        return None

    def data_to_send(self) -> bytes:
        """Replies due (pongs), in order; empty if none."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def connection_lost(self) -> None:
        """The connection ended without end of file (reset, timeout, cancelled): an
        unfinished snapshot is abandoned; the position stays for the next hello."""
        if self._in_snapshot:
            self._abandon_snapshot()
        self._ended = True
        self._conn_status = None
        if self._proto is not None:
            self._proto.close()

    # --- Rules -----------------------------------------------------------------------------------

    def _on_eof(self) -> None:
        after = self._goodbye
        self.connection_lost()
        reason = "Typha closed the connection" + (" after its Goodbye" if after else "")
        self._events.append(ConnectionEnded(reason, after))

    def _abandon_snapshot(self) -> None:
        self._in_snapshot = False
        self._seen = None

    def _on_message(self, msg: Message) -> None:
        if self._goodbye:
            raise ProtocolError(f"{type(msg).__name__} after Goodbye")
        events = self._events
        match msg:
            case KVs():
                events.append(self._on_kvs(msg))
            case Ping():
                assert self._proto is not None
                self._out += self._proto.pong(msg, self.seq)
                events.append(Pinged(msg))
            case SyncStatusMsg():
                self.status = self._conn_status = msg.status
                events.append(StatusChanged(msg))
            case BatchDone():
                events.append(self._on_done(msg))
            case ServerHello():
                events.append(self._on_server_hello(msg))
            case Goodbye():
                self._goodbye = True
                events.append(GoodbyeReceived(msg))

    def _on_server_hello(self, msg: ServerHello) -> Handshake:
        self._streaming = True
        self._batch_count = 0
        if msg.resumed and msg.resume_seq is not None:
            self.epoch = msg.epoch
            self.seq = msg.resume_seq
            self._in_snapshot = False
            return Handshake(msg, True)
        # A fresh snapshot follows. Keys held that it does not list are deleted at its end.
        self._in_snapshot = True
        self._pending_epoch = msg.epoch
        self._seen = set() if self.keep_state else None
        return Handshake(msg, False)

    def _on_kvs(self, msg: KVs) -> KVBatch:
        kvs = msg.kvs
        kind = msg.kind
        if kind is KVKind.SNAPSHOT:
            if not self._in_snapshot:
                raise ProtocolError("snapshot data outside a snapshot")
            self._batch_count += len(kvs)
            if self._seen is not None:
                self._seen.update(k for k, _ in kvs)
        elif kind is KVKind.CATCHUP:
            self._batch_count += len(kvs)
        if self.keep_state:
            state = self.state
            for key, value in kvs:
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        if kind is KVKind.DELTA:
            self.seq = msg.seq
            self.revision = msg.revision
        return KVBatch(kind, msg.seq, msg.revision, len(kvs), kvs, msg)

    def _on_done(self, msg: BatchDone) -> BatchEnd:
        deleted: tuple[str, ...] = ()
        if msg.kind is KVKind.SNAPSHOT:
            if not self._in_snapshot:
                raise ProtocolError("snapshot end without a snapshot")
            if msg.total != self._batch_count:
                raise ProtocolError(
                    f"snapshot carried {self._batch_count} KVs, server says {msg.total}"
                )
            if self._seen is not None:
                seen = self._seen
                deleted = tuple(k for k in self.state if k not in seen)
                for key in deleted:
                    del self.state[key]
            self._abandon_snapshot()
            self.epoch = self._pending_epoch
        else:
            if msg.total != self._batch_count:
                raise ProtocolError(
                    f"catch-up carried {self._batch_count} KVs, server says {msg.total}"
                )
        self._batch_count = 0
        self.seq = msg.seq
        self.revision = msg.revision
        return BatchEnd(msg, deleted)

    # --- Header-only mode: frames cut in place -----------------------------------------------

    def _on_kvs_header(
        self, kind: int, seq: int, rev: int | None, count: int, payload: bytes | None, k: int
    ) -> None:
        if self._goodbye:
            raise ProtocolError("KVs after Goodbye")
        if not self._streaming:
            raise ProtocolError("KVs before the ServerHello")
        if kind == 0:
            self.seq = seq
            self.revision = rev
            if payload is None:
                # A load client only counts: merge with an unsampled delta just before.
                events = self._events
                last = events[-1] if events else None
                if type(last) is KVBatch and last.payload is None and last.kind is _DELTA:
                    last.seq = seq
                    last.revision = rev
                    last.count += count
                    last.frames += 1
                    return
        elif kind == 1:
            if not self._in_snapshot:
                raise ProtocolError("snapshot data outside a snapshot")
            self._batch_count += count
        else:
            hello = self.server_hello
            if hello is None or FEATURE_CATCHUP not in hello.features:
                raise ProtocolError("catch-up batch without negotiating it")
            self._batch_count += count
        self._events.append(KVBatch(_KINDS[kind], seq, rev, count, None, None, payload, k))

    def _samples(self, kind: int, count: int) -> int:
        # Sampled only while in sync: deltas that complete a (re)sync carry writes the client
        # missed while away, not propagation latency.
        if kind or self.sampler is None or self._conn_status is not SyncStatus.IN_SYNC:
            return 0
        return self.sampler(count)

    def _feed_header_only(self, mv: memoryview, n: int) -> None:
        pos = 0
        max_frame = self.max_frame
        sampler = self.sampler
        events = self._events
        while pos < n:
            ph = self._ph
            if ph == _SKIP:
                left = n - pos
                if self._need > left:
                    self._need -= left
                    return
                pos += self._need
                self._need = 0
                self._ph = _HDR
                self._frame_done()
                continue
            if ph == _COLLECT:
                coll = self._coll
                assert coll is not None
                take = min(self._need, n - pos)
                coll += mv[pos : pos + take]
                pos += take
                self._need -= take
                if not self._need:
                    self._ph = _HDR
                    self._coll = None
                    self._on_payload(bytes(coll))
                continue
            if ph == _PRE:
                hb = self._hb
                take = min(self._need, n - pos)
                hb += mv[pos : pos + take]
                pos += take
                self._need -= take
                if not self._need:
                    prefix = bytes(hb)
                    hb.clear()
                    self._on_prefix(prefix)
                continue
            # _HDR: the 5-byte frame header.
            hb = self._hb
            if not hb and n - pos >= 5 + KVS_PREFIX and self._streaming:
                # Fast path: a whole plain KVs frame in this chunk, counted (and sampled)
                # without entering the skip phase: most frames take this path.
                length = int.from_bytes(mv[pos : pos + 4], "big")
                end = pos + 5 + length
                if mv[pos + 4] == 0 and _SMALL < length <= max_frame and end <= n:
                    prefix = bytes(mv[pos + 5 : pos + 5 + KVS_PREFIX])
                    if prefix[0] == 0x96 and prefix[1] == 0x04:
                        kind, seq, rev, count = parse_kvs_header(prefix)
                        k = (
                            0
                            if kind or sampler is None or self._conn_status is not _IN_SYNC
                            else sampler(count)
                        )
                        pos = end
                        if kind or k or self._goodbye:
                            payload = bytes(mv[pos - length : pos]) if k else None
                            self._on_kvs_header(kind, seq, rev, count, payload, k)
                            continue
                        # The hottest path of a load client: an unsampled delta, merged
                        # with one just before it (see ``_on_kvs_header``).
                        self.seq = seq
                        self.revision = rev
                        last = events[-1] if events else None
                        if type(last) is KVBatch and last.payload is None and last.kind is _DELTA:
                            last.seq = seq
                            last.revision = rev
                            last.count += count
                            last.frames += 1
                        else:
                            events.append(KVBatch(_DELTA, seq, rev, count, None))
                        continue
            if not hb and n - pos >= 5:
                length = int.from_bytes(mv[pos : pos + 4], "big")
                flags = mv[pos + 4]
                pos += 5
            else:
                take = min(5 - len(hb), n - pos)
                hb += mv[pos : pos + take]
                pos += take
                if len(hb) < 5:
                    return
                length = int.from_bytes(hb[:4], "big")
                flags = hb[4]
                hb.clear()
            if length > max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit")
            if flags & ~FLAG_ZSTD:
                raise ProtocolError(f"unknown frame flags {flags:#x}")
            self._flen = length
            self._zstd = bool(flags & FLAG_ZSTD)
            if self._zstd or length <= _SMALL or not self._streaming:
                # Whole payload needed: control message, compressed frame, or the hello.
                if n - pos >= length:
                    payload = bytes(mv[pos : pos + length])
                    pos += length
                    self._on_payload(payload)
                else:
                    self._coll = bytearray(mv[pos:n])
                    self._need = length - (n - pos)
                    self._ph = _COLLECT
                    return
                continue
            want = min(length, KVS_PREFIX)
            if n - pos >= want:
                prefix = bytes(mv[pos : pos + want])
                pos += want
                self._on_prefix(prefix)
            else:
                hb += mv[pos:n]
                self._need = want - (n - pos)
                self._ph = _PRE
                return

    def _on_prefix(self, prefix: bytes) -> None:
        """The first bytes of a plain payload: decide to skip the rest or to collect it."""
        rest = self._flen - len(prefix)
        if not is_kvs_payload(prefix):
            self._coll = bytearray(prefix)
            self._need = rest
            self._ph = _COLLECT if rest else _HDR
            if not rest:
                self._coll = None
                self._on_payload(prefix)
            return
        kind, seq, rev, count = parse_kvs_header(prefix)
        self._pend = (kind, seq, rev, count)
        k = self._samples(kind, count)
        if k:
            self._pend_samples = k
            self._coll = bytearray(prefix)
            self._need = rest
            self._ph = _COLLECT
            if not rest:
                self._ph = _HDR
                self._coll = None
                self._on_payload(prefix)
            return
        self._need = rest
        self._ph = _SKIP if rest else _HDR
        if not rest:
            self._frame_done()

    def _frame_done(self) -> None:
        """A skipped KVs frame ended: it counts now that its last byte arrived."""
        pend = self._pend
        if pend is None:
            return
        self._pend = None
        self._on_kvs_header(*pend, None, 0)

    def _on_payload(self, payload: bytes) -> None:
        """A whole payload: a sampled or small KVs frame, or a control message."""
        if self._zstd:
            payload = self._decompress(payload)
        if is_kvs_payload(payload):
            pend = self._pend
            if pend is None:  # small, compressed or unsampled: header not parsed yet
                pend = parse_kvs_header(payload[:KVS_PREFIX])
                k = self._samples(pend[0], pend[3])
            else:
                k = self._pend_samples
            self._pend = None
            self._pend_samples = 0
            self._on_kvs_header(*pend, payload if k else None, k)
            return
        self._pend = None
        msg = decode_payload(payload)
        if isinstance(msg, KVs):  # a KVs message in another encoding than the header expects
            raise ProtocolError("KVs message with an unexpected header")
        assert self._proto is not None
        self._proto.check(msg)
        self._on_message(msg)

    def _decompress(self, payload: bytes) -> bytes:
        limit = self.max_frame
        try:
            size = zstandard.get_frame_parameters(payload).content_size
        except zstandard.ZstdError:
            raise ProtocolError("invalid zstd frame") from None
        if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) or size > limit:
            raise ProtocolError("zstd frame without an acceptable content size")
        if self._dctx is None:
            self._dctx = zstandard.ZstdDecompressor()
        try:
            return self._dctx.decompress(payload, max_output_size=limit)
        except zstandard.ZstdError:
            raise ProtocolError("corrupt zstd frame") from None


class SessionShell:
    """The session's position and state, read through an I/O shell that holds ``session``."""

    session: ClientSession

    @property
    def position(self) -> ResumeToken | None:
        return self.session.position

    @property
    def state(self) -> dict[str, Any]:
        return self.session.state

    @property
    def status(self) -> SyncStatus | None:
        return self.session.status

    @property
    def epoch(self) -> int | None:
        return self.session.epoch

    @property
    def seq(self) -> int:
        return self.session.seq

    @property
    def revision(self) -> int | None:
        return self.session.revision


__all__ = [
    "BatchEnd",
    "ClientSession",
    "ConnectionEnded",
    "Event",
    "GoodbyeReceived",
    "Handshake",
    "KVBatch",
    "Pinged",
    "SessionShell",
    "StatusChanged",
]
