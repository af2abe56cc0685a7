"""Many sync-protocol clients in one process, on one ``selectors`` loop (no trio).

A load generator has to simulate hundreds of nodes on a machine that also runs the server, so
a simulated node must cost next to nothing. Every :class:`LoadClient` is still a real protocol
client: it sends the ClientHello built by :class:`typha.protocol.ClientProtocol`, answers Pings,
follows the snapshot/resume/catch-up rules, honours Goodbye (delay and address) and reconnects
with backoff and resume tokens.

Two modes:

* ``light``: the session's header-only mode: frames are cut from the byte stream without
  buffering them; of a KVs frame only the message header is parsed and the rest is skipped in
  place, unless the frame was picked for a latency sample. Control messages are decoded fully.
* ``full``: every message is decoded and checked and applied to the session's state, exactly as
  the node agent's client does, so a state digest can be compared with the datastore.

Either way the protocol's rules (position, snapshot, resume, catch-up, Goodbye) are those of
:class:`typha.protocol.ClientSession`, shared with ``felix_client/sync_client.py``; this module
is the I/O around many sessions on one ``selectors`` loop.

Latency: writers stamp each update with ``time.time()`` in the value (``value["stamp"]``,
``value["annotations"]["stamp"]`` or ``value["labels"]["load.typha/stamp"]``, as a float or a
decimal string); a client that is in sync picks each delta KV for a sample with probability
``sample_prob`` and records ``wall time of the read that completed it - stamp``. Deltas that
arrive while a client is not in sync (finishing a resync or a resume) are counted but not
sampled: they carry writes the client missed while away. Counts are made here, by the clients.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import random
import select
import selectors
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

from typha.protocol import (
    CLIENT_DEFAULT_MAX_FRAME,
    COMPRESSION_ZSTD,
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    FEATURE_RESUME,
    BatchEnd,
    ClientSession,
    ConnectionEnded,
    GoodbyeReceived,
    Handshake,
    KVBatch,
    KVKind,
    Message,
    Pinged,
    ProtocolError,
    SessionShell,
    StatusChanged,
    SyncStatus,
    decode_payload,
)

LIGHT = "light"
FULL = "full"
MODES = (LIGHT, FULL)

STAMP_LABEL = "load.typha/stamp"

# Client connection states.
IDLE, CONNECTING, STREAMING = 0, 1, 2


class SessionEnd(Exception):
    """Ends the current connection; ``delay``/``address`` come from a Goodbye."""

    def __init__(self, reason: str, delay: float | None = None, address: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.address = address


@dataclass
class ClientOptions:
    """How every client of one engine behaves."""

    addresses: Sequence[str]
    syncer: str = "felix"
    mode: str = LIGHT
    compression: bool = False  # offer zstd (off by default: loopback benchmarks)
    features: tuple[str, ...] = (FEATURE_CATCHUP, FEATURE_GOODBYE, FEATURE_RESUME)
    resume: bool = True  # send resume tokens when reconnecting
    sample_prob: float = 0.01  # probability that a delta KV is sampled for latency
    read_timeout: float = 60.0  # Typha pings every 10 s; Felix's own default is 30 s
    connect_timeout: float = 10.0
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    max_frame: int = CLIENT_DEFAULT_MAX_FRAME
    rcvbuf: int | None = None
    recv_size: int = 256 << 10
    # Full mode: frames are identical for every client of a process, so decode each distinct
    # payload once and share the (immutable) decoded message. Identical results, less CPU.
    share_decode: bool = True
    client_version: str = "typha-load"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.addresses:
            raise ValueError("at least one address is needed")


# --- The poller ---------------------------------------------------------------------------------


class Poller:
    """``selectors``-style register/modify/unregister/select, straight on ``select.epoll``
    where there is one: ``selectors`` costs a dict lookup and a tuple per event, which shows
    at tens of thousands of events per second. ``select`` returns (data, mask) pairs with the
    ``selectors.EVENT_*`` mask bits."""

    def __init__(self) -> None:
        self._data: dict[int, Any] = {}
        self._ep = select.epoll() if hasattr(select, "epoll") else None
        self._sel = None if self._ep is not None else selectors.DefaultSelector()

    @staticmethod
    def _fd(fileobj: Any) -> int:
        return fileobj if isinstance(fileobj, int) else fileobj.fileno()

    @staticmethod
    def _ep_mask(events: int) -> int:
        return (select.EPOLLIN if events & selectors.EVENT_READ else 0) | (
            select.EPOLLOUT if events & selectors.EVENT_WRITE else 0
        )

    def register(self, fileobj: Any, events: int, data: Any) -> None:
        fd = self._fd(fileobj)
        self._data[fd] = data
        if self._ep is not None:
            self._ep.register(fd, self._ep_mask(events))
        else:
            assert self._sel is not None
            self._sel.register(fd, events, data)

    def modify(self, fileobj: Any, events: int, data: Any) -> None:
        fd = self._fd(fileobj)
        self._data[fd] = data
        if self._ep is not None:
            self._ep.modify(fd, self._ep_mask(events))
        else:
            assert self._sel is not None
            self._sel.modify(fd, events, data)

    def unregister(self, fileobj: Any) -> None:
        fd = self._fd(fileobj)
        self._data.pop(fd, None)
        if self._ep is not None:
            self._ep.unregister(fd)
        else:
            assert self._sel is not None
            self._sel.unregister(fd)

    def select(self, timeout: float) -> list[tuple[Any, int]]:
        if self._ep is None:
            assert self._sel is not None
            return [(key.data, mask) for key, mask in self._sel.select(timeout)]
        data = self._data
        out = []
        for fd, ev in self._ep.poll(timeout):
            d = data.get(fd)
            if d is None:
                continue
            # Errors and hang-ups surface as readable: the read then sees them.
            mask = selectors.EVENT_READ if ev & ~select.EPOLLOUT else 0
            if ev & select.EPOLLOUT:
                mask |= selectors.EVENT_WRITE
            out.append((d, mask))
        return out

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
        if self._sel is not None:
            self._sel.close()


# --- Latency samples ---------------------------------------------------------------------------


def stamp_of(value: Any) -> float | None:
    """The writer's wall-clock stamp inside a model value, if it carries one."""
    if type(value) is not dict:
        return None
    s = value.get("stamp")
    if s is None:
        ann = value.get("annotations")
        if type(ann) is dict:
            s = ann.get("stamp")
        if s is None:
            labels = value.get("labels")
            if type(labels) is dict:
                s = labels.get(STAMP_LABEL)
            if s is None:
                return None
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def _sample_count(rng: random.Random, count: int, p: float) -> int:
    """How many KVs of a ``count``-KV frame to sample so that each KV has probability ``p``."""
    if p <= 0 or count <= 0:
        return 0
    expect = count * p
    k = int(expect)
    if rng.random() < expect - k:
        k += 1
    return min(k, count)


# --- State digests ----------------------------------------------------------------------------


def pack_value(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def state_digest(state: Mapping[str, Any], *, packed: bool = False) -> str:
    """SHA-256 over the sorted keys and their msgpack-packed values (same as the core tests).

    With ``packed`` the mapping already holds packed values.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        v = state[key]
        h.update(v if packed else pack_value(v))
    return h.hexdigest()


def compare_states(state: Mapping[str, Any], expected: Mapping[str, bytes]) -> dict[str, int]:
    """Count differences between a client's state and the expected packed values.

    ``lost``: expected keys the client lacks; ``ghost``: keys the client has that are not
    expected; ``stale``: keys both have with different values.
    """
    lost = sum(1 for k in expected if k not in state)
    ghost = sum(1 for k in state if k not in expected)
    stale = sum(1 for k, v in state.items() if k in expected and pack_value(v) != expected[k])
    return {"lost": lost, "ghost": ghost, "stale": stale}


def parse_address(addr: str, default_port: int = 5473) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        return addr.strip("[]"), default_port
    return host.strip("[]"), int(port)


# --- Full mode: a decode cache shared by the sessions of a process ------------------------------


class _DecodeCache:
    """Decoded KVs messages by payload bytes (bounded LRU), shared by a process's clients."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[bytes, Message] = OrderedDict()
        self._size = size
        self.hits = 0
        self.misses = 0

    def decode(self, payload: bytes) -> Message:
        if len(payload) < 256:  # pings, statuses: cheap, and often unique per connection
            return decode_payload(payload)
        msg = self._items.get(payload)
        if msg is not None:
            self.hits += 1
            self._items.move_to_end(payload)
            return msg
        self.misses += 1
        msg = decode_payload(payload)
        self._items[payload] = msg
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return msg


# --- One client -------------------------------------------------------------------------------


class LoadClient(SessionShell):
    """One simulated node: a connection around a :class:`ClientSession`, and its counters."""

    def __init__(self, engine: Engine, index: int, node: str, *, full: bool = False) -> None:
        self.engine = engine
        o = self.opts = engine.opts
        self.index = index
        self.node = node
        self.conn_id = random.getrandbits(63)
        self.full = full
        self.sock: socket.socket | None = None
        self.conn_state = IDLE
        self.addr: str | None = None
        self.preferred: str | None = None
        self._addr_cycle: list[str] = []
        self.failures = 0
        self.connect_started = 0.0
        self.last_rx = 0.0
        self._out = bytearray()
        self._want_write = False
        rng = engine.rng
        self.session = ClientSession(
            node,
            o.syncer,
            client_version=o.client_version,
            info="load/lightclient " + o.mode,
            compressions=(COMPRESSION_ZSTD,) if o.compression else (),
            features=o.features,
            resume=o.resume,
            keep_state=full,
            conn_id=self.conn_id,
            max_frame=o.max_frame,
            header_only=not full,
            # Reads the probability at each frame: a worker's "sample" command changes it.
            sampler=lambda count: _sample_count(rng, count, o.sample_prob),
            decode=engine.decode_cache.decode if full and engine.decode_cache else decode_payload,
            decompressor=engine.dctx,
        )
        self.first_sync_at: float | None = None  # wall clock, first time ever in sync
        self.session_sync_at: float | None = None  # wall clock, this session
        self.session_started_at: float | None = None  # wall clock, connect() of this session
        # Counters.
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.goodbyes = 0
        self.snapshots = 0
        self.resumes = 0
        self.catchups = 0
        self.protocol_errors = 0
        self.read_timeouts = 0
        self.frames = 0
        self.bytes = 0
        self.kvs_delta = 0
        self.kvs_snapshot = 0
        self.kvs_catchup = 0
        self.last_error = ""
        self.last_goodbye = ""

    @property
    def in_sync(self) -> bool:
        return self.session.in_sync

    # --- Connecting ------------------------------------------------------------------------------

    def _next_address(self) -> str:
        if self.preferred:
            addr, self.preferred = self.preferred, None
            return addr
        if not self._addr_cycle:
            self._addr_cycle = list(self.opts.addresses)
            random.shuffle(self._addr_cycle)
        return self._addr_cycle.pop()

    def connect(self) -> None:
        """Start a non-blocking connect (the engine calls this from a timer)."""
        if self.conn_state != IDLE or self.engine.stopping:
            return
        addr = self._next_address()
        self.addr = addr
        try:
            family, sockaddr = self.engine.resolve(addr)
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._connect_failed(f"{addr}: {exc}")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.opts.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.opts.rcvbuf)
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._connect_failed(f"{addr}: {errno.errorcode.get(err, err)}")
            return
        self.sock = sock
        self.conn_state = CONNECTING
        self.connect_started = time.monotonic()
        self.session_started_at = time.time()
        self.engine.sel.register(sock, selectors.EVENT_WRITE, self)

    def _connect_failed(self, reason: str) -> None:
        self.connect_failures += 1
        self.engine.connect_failures += 1
        self.last_error = reason
        # Felix pauses 100 ms between addresses; after a full round, back off.
        if self._addr_cycle:
            self.engine.call_later(0.1, self.connect)
        else:
            self._backoff(None)

    def _backoff(self, delay: float | None) -> None:
        self.failures += 1
        if delay is None:
            o = self.opts
            delay = random.uniform(0, min(o.backoff_cap, o.backoff_base * 2**self.failures))
        self.engine.call_later(delay, self.connect)

    def _on_connected(self) -> None:
        assert self.sock is not None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.engine.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
            self.conn_state = IDLE
            self._connect_failed(f"{self.addr}: {errno.errorcode.get(err, err)}")
            return
        self.connects += 1
        self.conn_state = STREAMING
        self.last_rx = time.monotonic()
        self._out.clear()
        self.session_sync_at = None
        # Options may change between connections (a test turns resume tokens off mid-run).
        self.session.resume = self.opts.resume
        hello = self.session.connect()
        self.engine.sel.modify(self.sock, selectors.EVENT_READ, self)
        self._want_write = False
        self._send(hello)

    # --- I/O ---------------------------------------------------------------------------------

    def on_event(self, mask: int, wall: float) -> None:
        try:
            if self.conn_state == CONNECTING:
                self._on_connected()
                return
            if mask & selectors.EVENT_WRITE and self._out:
                self._flush()
            if mask & selectors.EVENT_READ:
                self._on_readable(wall)
        except SessionEnd as end:
            self.end_session(end)
        except ProtocolError as exc:
            self.protocol_errors += 1
            self.end_session(SessionEnd(f"protocol error: {exc.reason}"))
        except OSError as exc:
            self.end_session(SessionEnd(f"connection lost: {exc or type(exc).__name__}"))

    def _on_readable(self, wall: float) -> None:
        assert self.sock is not None
        eng = self.engine
        try:
            n = self.sock.recv_into(eng.rbuf)
        except (BlockingIOError, InterruptedError):
            return
        # Receipt time per read, not per poll: handling one poll's events can take a while,
        # and a later read may hold bytes written after the poll returned.
        wall = time.time()
        self.last_rx = time.monotonic()
        self.bytes += n
        eng.bytes += n
        self.feed(eng.rview[:n], wall)  # b"" at end of file

    def feed(self, data: bytes | memoryview, wall: float) -> None:
        """Bytes read at ``wall``: through the session, then its events and replies."""
        session = self.session
        session.receive_data(data)
        while (event := session.next_event()) is not None:
            self._handle(event, wall)
        replies = session.data_to_send()
        if replies:
            self._send(replies)

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            return
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self._out += data[sent:]
            if not self._want_write:
                self._want_write = True
                self.engine.sel.modify(
                    self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self
                )

    def _flush(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        del self._out[:sent]
        if not self._out and self._want_write:
            self._want_write = False
            self.engine.sel.modify(self.sock, selectors.EVENT_READ, self)

    def end_session(self, end: SessionEnd) -> None:
        """Close the connection and schedule the reconnect (Goodbye delay or backoff)."""
        if self.sock is None:
            return
        was_in_sync = self.in_sync
        self.engine.sel.unregister(self.sock)
        self.sock.close()
        self.sock = None
        self.conn_state = IDLE
        self.session.connection_lost()
        self.disconnects += 1
        self.last_error = end.reason
        if self.engine.stopping:
            return
        if end.address:
            self.preferred = end.address
        if was_in_sync or end.delay is not None:
            self.failures = 0
        self._backoff(end.delay)

    def close(self) -> None:
        if self.sock is not None:
            self.engine.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.conn_state = IDLE
        self.session.connection_lost()

    # --- Events --------------------------------------------------------------------------------

    def _handle(self, event: Any, wall: float) -> None:
        t = type(event)
        if t is KVBatch:
            self.frames += event.frames
            self._on_kvs(event, wall)
            return
        self.frames += 1
        if t is StatusChanged:
            if event.status is SyncStatus.IN_SYNC and self.session_sync_at is None:
                now = time.time()
                self.session_sync_at = now
                if self.first_sync_at is None:
                    self.first_sync_at = now
        elif t is BatchEnd:
            if event.kind is KVKind.SNAPSHOT:
                self.snapshots += 1
            else:
                self.catchups += 1
        elif t is Handshake:
            if event.resumed:
                self.resumes += 1
        elif t is GoodbyeReceived:
            bye = event.message
            self.goodbyes += 1
            self.engine.goodbyes += 1
            self.last_goodbye = bye.reason
            raise SessionEnd(f"goodbye: {bye.reason}", bye.reconnect_delay, bye.address)
        elif t is ConnectionEnded:
            self.frames -= 1
            raise SessionEnd("Typha closed the connection")
        else:
            assert t is Pinged, t

    def _on_kvs(self, batch: KVBatch, wall: float) -> None:
        n = batch.count
        eng = self.engine
        kind = batch.kind
        if kind is KVKind.DELTA:
            self.kvs_delta += n
            eng.kvs_delta += n
            if batch.payload is not None:  # header-only: the frame the sampler picked
                self._sample_payload(batch.payload, n, batch.samples, wall)
            elif batch.kvs is not None and self.session.in_sync:
                kvs = batch.kvs
                k = _sample_count(eng.rng, n, self.opts.sample_prob)
                for i in eng.rng.sample(range(n), k) if k else ():
                    self._record(kvs[i][1], wall, eng)
        elif kind is KVKind.SNAPSHOT:
            self.kvs_snapshot += n
            eng.kvs_snapshot += n
        else:
            self.kvs_catchup += n
            eng.kvs_catchup += n

    def _sample_payload(self, payload: bytes, count: int, k: int, wall: float) -> None:
        """Latency of ``k`` random KVs of a delta payload, decoding only those."""
        up = msgpack.Unpacker(raw=False)
        up.feed(payload)
        up.read_array_header()
        for _ in range(5):
            up.skip()
        up.read_array_header()
        idx = sorted(self.engine.rng.sample(range(count), k))
        at = 0
        eng = self.engine
        for i in idx:
            for _ in range(i - at):
                up.skip()
            kv = up.unpack()
            at = i + 1
            self._record(kv[1] if type(kv) is list and len(kv) == 2 else None, wall, eng)

    @staticmethod
    def _record(value: Any, wall: float, eng: Engine) -> None:
        stamp = stamp_of(value)
        if stamp is None:
            eng.unstamped += 1
        else:
            eng.latencies.append((wall - stamp) * 1000.0)

    def digest(self) -> str:
        return state_digest(self.state)


# --- The engine -------------------------------------------------------------------------------


class Engine:
    """K clients on one selector loop. Not thread-safe: drive it from one thread."""

    def __init__(
        self,
        opts: ClientOptions,
        n_clients: int,
        *,
        node_prefix: str = "load-node-",
        first_index: int = 0,
        seed: int | None = None,
        full_clients: int = 0,
    ) -> None:
        """``n_clients`` clients; all full if ``opts.mode`` is full, else the first
        ``full_clients`` of them (a few state-checking clients among many light ones)."""
        n_full = n_clients if opts.mode == FULL else min(full_clients, n_clients)
        self.opts = opts
        self.sel = Poller()
        self.rng = random.Random(seed)
        self.rbuf = bytearray(opts.recv_size)
        self.rview = memoryview(self.rbuf)
        self.decode_cache = _DecodeCache() if n_full and opts.share_decode else None
        self.dctx = zstandard.ZstdDecompressor()  # shared by the sessions (one loop)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self._fds: dict[int, Callable[[], None]] = {}
        self._resolved: dict[str, tuple[int, Any]] = {}
        self._last_check = time.monotonic()
        self.stopping = False
        # Engine-wide counters (the per-client ones add up to these).
        self.kvs_delta = 0
        self.kvs_snapshot = 0
        self.kvs_catchup = 0
        self.bytes = 0
        self.goodbyes = 0
        self.connect_failures = 0
        self.unstamped = 0
        self.latencies: list[float] = []  # ms; drained by whoever reports
        self.clients = [
            LoadClient(self, first_index + i, f"{node_prefix}{first_index + i}", full=i < n_full)
            for i in range(n_clients)
        ]

    # --- Timers and extra fds ------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.call_at(time.monotonic() + max(0.0, delay), fn)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn))

    def add_reader(self, fd: int, fn: Callable[[], None]) -> None:
        """Watch another fd (a worker's command pipe) on the same loop."""
        self._fds[fd] = fn
        self.sel.register(fd, selectors.EVENT_READ, fn)

    def remove_reader(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self.sel.unregister(fd)

    def resolve(self, addr: str) -> tuple[int, Any]:
        got = self._resolved.get(addr)
        if got is None:
            host, port = parse_address(addr)
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            got = (info[0], info[4])
            self._resolved[addr] = got
        return got

    # --- Running ---------------------------------------------------------------------------------

    def start(self, at: float | None = None, spread: float = 0.0) -> None:
        """Schedule every client's first connect at monotonic time ``at`` (now if None), spread
        evenly over ``spread`` seconds."""
        base = time.monotonic() if at is None else at
        n = len(self.clients)
        for i, c in enumerate(self.clients):
            self.call_at(base + (spread * i / n if n else 0.0), c.connect)

    def poll(self, timeout: float) -> None:
        """One loop iteration: due timers, one select, read-timeout checks."""
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            fn()
        if timers:
            timeout = min(timeout, max(0.0, timers[0][0] - now))
        events = self.sel.select(timeout)
        wall = time.time()
        for data, mask in events:
            if type(data) is LoadClient:
                data.on_event(mask, wall)
            else:
                data()
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._check_timeouts(now)

    def _check_timeouts(self, now: float) -> None:
        o = self.opts
        for c in self.clients:
            if c.conn_state == STREAMING and now - c.last_rx > o.read_timeout:
                c.read_timeouts += 1
                c.end_session(SessionEnd(f"no data from Typha for {o.read_timeout:g}s"))
            elif c.conn_state == CONNECTING and now - c.connect_started > o.connect_timeout:
                c.close()
                c._connect_failed(f"{c.addr}: connect timeout")

    def run(
        self,
        *,
        duration: float | None = None,
        until: Callable[[], bool] | None = None,
        tick: float = 0.05,
    ) -> bool:
        """Loop until ``until()`` is true (returns True) or ``duration`` passes (False)."""
        deadline = None if duration is None else time.monotonic() + duration
        while True:
            if until is not None and until():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.poll(tick)

    def close(self) -> None:
        self.stopping = True
        for c in self.clients:
            c.close()
        for fd in list(self._fds):
            self.remove_reader(fd)
        self.sel.close()

    # --- Reporting -------------------------------------------------------------------------------

    def take_latencies(self) -> list[float]:
        out, self.latencies = self.latencies, []
        return out

    def summary(self) -> dict[str, Any]:
        """Counters summed over the clients (cheap: a few hundred clients)."""
        cs = self.clients
        synced = [c.first_sync_at for c in cs if c.first_sync_at is not None]
        return {
            "clients": len(cs),
            "connected": sum(1 for c in cs if c.conn_state == STREAMING),
            "in_sync": sum(1 for c in cs if c.in_sync),
            "ever_in_sync": len(synced),
            "first_sync_min": min(synced) if synced else None,
            "first_sync_max": max(synced) if synced else None,
            "kvs_delta": self.kvs_delta,
            "kvs_snapshot": self.kvs_snapshot,
            "kvs_catchup": self.kvs_catchup,
            "frames": sum(c.frames for c in cs),
            "bytes": self.bytes,
            "connects": sum(c.connects for c in cs),
            "connect_failures": self.connect_failures,
            "disconnects": sum(c.disconnects for c in cs),
            "goodbyes": self.goodbyes,
            "snapshots": sum(c.snapshots for c in cs),
            "resumes": sum(c.resumes for c in cs),
            "catchups": sum(c.catchups for c in cs),
            "protocol_errors": sum(c.protocol_errors for c in cs),
            "read_timeouts": sum(c.read_timeouts for c in cs),
            "unstamped": self.unstamped,
            "min_kvs_delta": min((c.kvs_delta for c in cs), default=0),
            "max_kvs_delta": max((c.kvs_delta for c in cs), default=0),
            "revisions": sorted({c.revision for c in cs if c.revision is not None})[-3:],
        }

    def digests(self) -> dict[str, str]:
        """Every full client's state digest, by node name."""
        return {c.node: c.digest() for c in self.clients if c.full}

    def verify(self, expected: Mapping[str, bytes]) -> list[dict[str, Any]]:
        """Compare every full client's state with ``expected`` (packed values)."""
        want = state_digest(expected, packed=True)
        out = []
        for c in self.clients:
            if not c.full:
                continue
            d = c.digest()
            row: dict[str, Any] = {"node": c.node, "digest": d, "match": d == want}
            row.update(
                compare_states(c.state, expected)
                if d != want
                else {"lost": 0, "ghost": 0, "stale": 0}
            )
            row["keys"] = len(c.state)
            out.append(row)
        return out
