"""What both etcd clients share, whichever way they reach etcd (the JSON gateway,
:mod:`typha.sync.etcd_client`, or gRPC, :mod:`typha.sync.etcd_grpc`): errors, the data types they
return, token authentication, pagination, endpoint and TLS set-up.

No transport here: in particular no httpx, so that ``EtcdAPI=grpc`` (the default) starts without
loading the gateway's HTTP/1.1 stack (httpx, httpcore, h11, anyio, certifi: tens of ms of a cold
start).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import trio

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"

# gRPC status codes (the gateway passes them through in its error bodies).
GRPC_OUT_OF_RANGE = 11
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16


# --- errors ---------------------------------------------------------------------------------------


class EtcdError(Exception):
    """etcd answered with an error (or something this client cannot interpret).

    ``code`` is the gRPC status code when etcd gave one, ``status`` the HTTP status.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached (connection refused/reset, TLS failure, timeout, 503)."""


class RevisionCompacted(EtcdError):
    """The requested revision has been compacted away (a range with an old ``revision``)."""

    def __init__(self, message: str, compact_revision: int = 0, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.compact_revision = compact_revision


class WatchCompacted(RevisionCompacted):
    """etcd cancelled a watch because its start revision is older than ``compact_revision``.

    The caller must re-list: events between its revision and ``compact_revision`` are gone.
    """

    def __init__(self, compact_revision: int):
        super().__init__(
            f"watch cancelled: revision compacted (compact_revision={compact_revision})",
            compact_revision,
        )


class WatchCanceled(EtcdError):
    """etcd cancelled a watch for a reason other than compaction (``cancel_reason``)."""


class WatchEnded(EtcdError):
    """A watch stream ended, broke, or stayed silent past its idle timeout.

    Nothing is known to be lost: re-watching from the last revision seen is safe.
    """


class AuthenticationFailed(EtcdError):
    """Username/password rejected by ``/v3/auth/authenticate``."""


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EtcdAccess:
    """How to reach etcd besides its endpoints: TLS files, credentials and timeouts (what a
    datastore passes on to each client it makes)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    request_timeout: float = 30.0
    connect_timeout: float = 5.0


@dataclass(slots=True)
class KeyValue:
    """One key as etcd returned it. ``key`` is decoded UTF-8 (undecodable bytes are kept as
    surrogate escapes so that ``key.encode("utf-8", "surrogateescape")`` round-trips).

    Not frozen, for speed (a frozen dataclass costs ~4x to build, and a list or replay builds
    tens of thousands): treat it as read-only.
    """

    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    """A range reply: ``revision`` is the store revision the read was served at."""

    kvs: list[KeyValue]
    revision: int
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    revision: int


@dataclass(slots=True)
class WatchEvent:
    """A PUT or DELETE. For a DELETE, ``kv.value`` is empty and ``kv.mod_revision`` is the
    revision of the deletion; ``prev_kv`` is set only when the watch asked for it."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class WatchResponse:
    """One message of a watch stream.

    ``revision`` is the header revision. With events it may be *ahead* of the last event (etcd
    stamps catch-up batches with the current store revision while more batches are pending), so
    only ``last_revision`` is a safe resume point. Without events it is a progress notification:
    every change up to ``revision`` has been delivered.
    """

    revision: int
    events: list[WatchEvent]

    @property
    def is_progress_notify(self) -> bool:
        return not self.events

    @property
    def last_revision(self) -> int:
        """The revision everything in this response brings the watcher to."""
        return self.events[-1].kv.mod_revision if self.events else self.revision


@dataclass(frozen=True, slots=True)
class PutOp:
    key: str | bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str | bytes
    range_end: str | bytes | None = None


TxnOp = PutOp | DeleteOp


# --- encoding helpers -----------------------------------------------------------------------------


def _as_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(_as_bytes(prefix))
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # etcd: "\0" as range_end means "to the end of the keyspace"


def is_invalid_token(message: str, code: int | None) -> bool:
    """Whether etcd's error says our auth token is unknown or expired (either transport)."""
    return code == GRPC_UNAUTHENTICATED or "invalid auth token" in message


# --- watch stream ---------------------------------------------------------------------------------


class WatchStreamBase:
    """What a watch of either etcd client (gateway or gRPC) tells about itself."""

    def __init__(
        self, *, endpoint: str, created_revision: int, cluster_id: str, idle_timeout: float | None
    ):
        self.endpoint = endpoint
        self.created_revision = created_revision
        """The store revision when the watch was created (not a delivery guarantee)."""
        self.cluster_id = cluster_id
        self._idle_timeout = idle_timeout
        self.messages = 0


class TokenInvalid(Exception):
    """Internal to the clients: the server rejected our auth token; re-authenticate and retry
    once."""


class TokenAuth:
    """etcd password authentication as both clients (gateway and gRPC) do it: authenticate
    lazily, hand out the token for each request, fetch a new one when it is older than
    ``token_max_age`` or etcd said it is invalid (:meth:`_drop_token`, then retry once), and
    ignore the credentials when etcd has auth disabled (as etcd's Go client does).

    A client calls :meth:`_init_auth` and implements :meth:`_fetch_token` (the transport's
    ``Authenticate`` call, raising :class:`EtcdError` as its other calls do).
    """

    token_max_age: float
    _username: str | None

    def _init_auth(self, username: str | None, password: str | None, token_max_age: float) -> None:
        self.token_max_age = token_max_age
        self._username = username
        self._password = password or ""
        self._token: str | None = None
        self._token_time = 0.0
        self._token_generation = 0
        self._auth_lock: trio.Lock | None = None

    async def _fetch_token(self, username: str, password: str) -> str:
        raise NotImplementedError

    async def _auth_token(self) -> str | None:
        """The token to send (None: send none, without credentials or with auth disabled)."""
        if self._username is None:
            return None
        now = trio.current_time()
        if self._token is None or now - self._token_time > self.token_max_age:
            await self._authenticate(self._token_generation)
        # An empty token means the server has auth disabled.
        return self._token or None

    async def _authenticate(self, seen_generation: int) -> None:
        """Fetch a new token unless another task already replaced the one we saw fail."""
        assert self._username is not None
        if self._auth_lock is None:
            self._auth_lock = trio.Lock()
        async with self._auth_lock:
            fresh = trio.current_time() - self._token_time <= self.token_max_age
            if self._token_generation != seen_generation and self._token is not None and fresh:
                return
            try:
                token = await self._fetch_token(self._username, self._password)
            except EtcdError as exc:
                if isinstance(exc, EtcdUnavailable):
                    raise
                if "authentication is not enabled" in exc.message:
                    # Like etcd's Go client: credentials for a server without auth are harmless.
                    token = ""
                else:
                    raise AuthenticationFailed(
                        exc.message, code=exc.code, status=exc.status
                    ) from exc
            self._token = token
            self._token_time = trio.current_time()
            self._token_generation += 1

    def _drop_token(self, generation: int) -> None:
        if generation == self._token_generation:
            self._token = None

    @contextlib.asynccontextmanager
    async def _reauthenticating_watch(
        self,
        open_watch: Callable[[bytes, float | None], contextlib.AbstractAsyncContextManager[Any]],
        body: bytes,
        idle_timeout: float | None,
    ) -> AsyncIterator[Any]:
        """A watch opened by ``open_watch`` (either client's), opened once more with a fresh
        token if etcd refused the token it was created with."""
        for attempt in range(2):
            generation = self._token_generation
            try:
                async with open_watch(body, idle_timeout) as stream:
                    yield stream
                return
            except TokenInvalid:
                self._drop_token(generation)
                if attempt:
                    raise EtcdError("etcd rejected a freshly issued auth token", code=16) from None

    def _forget_token_after_timeout(self) -> None:
        """etcd can hold a request with an unknown token instead of rejecting it (it waits for
        the raft index named in a simple token): after a timeout, start afresh."""
        if self._username is not None:
            self._token = None


# --- client ---------------------------------------------------------------------------------------


async def paginate(
    range_call: Callable[..., Awaitable[RangeResult]],
    prefix: str | bytes,
    revision: int | None,
    page_size: int,
    range_end: str | bytes | None,
    keys_only: bool,
) -> AsyncGenerator[RangeResult, None]:
    """``range_paginated`` of either etcd client, on its ``range`` call (the JSON gateway's or
    gRPC's): every page at one revision, the first page always yielded."""
    end = _as_bytes(range_end) if range_end is not None else prefix_range_end(prefix)
    key = _as_bytes(prefix)
    pinned = revision
    while True:
        page = await range_call(key, end, revision=pinned, limit=page_size, keys_only=keys_only)
        if pinned is None:
            pinned = page.revision
        else:
            # A pinned read reports the current store revision in its header; report the
            # snapshot revision instead, which is what the caller resumes from.
            page = RangeResult(page.kvs, pinned, page.more, page.count)
        yield page
        if not page.more or not page.kvs:
            return
        # The smallest key after the last one seen.
        key = page.kvs[-1].key.encode("utf-8", "surrogateescape") + b"\0"


def normalise_endpoints(
    endpoints: Iterable[str], ca_file: str | None, cert_file: str | None
) -> list[str]:
    """Endpoint URLs as both clients use them: ``host:port`` becomes https when TLS files are
    given (a CA or a client cert), else http; blanks are dropped; none means the default."""
    tls = bool(ca_file or cert_file)
    urls = []
    for endpoint in endpoints:
        endpoint = endpoint.strip().rstrip("/")
        if not endpoint:
            continue
        if "://" not in endpoint:
            endpoint = f"{'https' if tls else 'http'}://{endpoint}"
        urls.append(endpoint)
    return urls or [DEFAULT_ENDPOINT]


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A new client TLS context for https endpoints: the server verified against ``ca_file``
    (the system's CAs without it) and its name checked, ``cert_file``/``key_file`` presented
    when set. New for each client: httpx sets its own ALPN protocols on the context it gets,
    gRPC needs "h2" alone."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
