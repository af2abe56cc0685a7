"""A small etcd v3 client for trio, speaking etcd's gRPC-JSON gateway (``/v3/...``) over httpx.

Why hand-written (docs/etcd.md): etcd3-py is unmaintained since 2019 and its watch is broken on
aiohttp >= 3.10; the gRPC clients (etcd3aio/grpcio) are asyncio-only and their default 4 MB
receive limit breaks a 20k-event watch replay. The JSON gateway needs nothing but HTTP/1.1, so
httpx on trio gives native cancellation and structured concurrency.

Gateway quirks handled here (measured on etcd 3.4.23 and 3.6):

* keys and values are base64; int64 fields are JSON strings; protobuf-JSON omits defaults, so a
  PUT event has no ``type`` field and revision 0 / ``more: false`` are simply absent;
* a watch is one long chunked POST answered with newline-delimited JSON, one ``{"result": ...}``
  per line; a single line can be tens of MB (a 20k-event replay is one 14.6 MB line), so the
  line reader has no length cap;
* compaction cancels a watch with ``canceled`` + ``compact_revision`` but leaves the HTTP stream
  open: we raise :class:`WatchCompacted` and close the stream ourselves;
* an invalid or expired auth token is answered with HTTP 401 / gRPC code 16 on unary calls and
  with a ``canceled`` watch whose ``cancel_reason`` says "invalid auth token"; both make us
  re-authenticate once and retry. Simple tokens vanish when etcd restarts.
* errors come as ``{"error", "code", "message"}`` (3.4, grpc-gateway v1) or
  ``{"code", "message", "details"}`` (3.5+); stream errors as ``{"error": {...}}``.

Every network wait is bounded by a trio timeout (``fail_after``/``move_on_after``) except the
watch stream itself, which may idle for as long as the server's progress-notify interval; its
optional ``idle_timeout`` bounds that too.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog
import trio

from typha.httpstreams import OneShotBody, finish_stream
from typha.jsonlimit import fast_loads

log = structlog.get_logger()

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"

# gRPC status codes that the gateway passes through in its error bodies.
_GRPC_OUT_OF_RANGE = 11
_GRPC_UNAVAILABLE = 14
_GRPC_UNAUTHENTICATED = 16


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


def _b64(data: str | bytes) -> str:
    return binascii.b2a_base64(_as_bytes(data), newline=False).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return binascii.a2b_base64(data) if data else b""


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(_as_bytes(prefix))
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # etcd: "\0" as range_end means "to the end of the keyspace"


def _parse_kv(d: dict[str, Any]) -> KeyValue:
    # Hot path (once per key listed or event watched): positional arguments, no helpers.
    key = d.get("key")
    value = d.get("value")
    return KeyValue(
        binascii.a2b_base64(key).decode("utf-8", "surrogateescape") if key else "",
        binascii.a2b_base64(value) if value else b"",
        int(d.get("mod_revision", 0)),
        int(d.get("create_revision", 0)),
        int(d.get("version", 0)),
    )


def _header_revision(result: dict[str, Any]) -> int:
    return int((result.get("header") or {}).get("revision", 0))


def _parse_watch_result(result: dict[str, Any]) -> WatchResponse:
    events = []
    for ev in result.get("events") or ():
        prev = ev.get("prev_kv")
        events.append(
            WatchEvent(
                # protobuf-JSON omits the default enum value: no "type" means PUT.
                type="DELETE" if ev.get("type") == "DELETE" else "PUT",
                kv=_parse_kv(ev.get("kv") or {}),
                prev_kv=_parse_kv(prev) if prev else None,
            )
        )
    return WatchResponse(revision=_header_revision(result), events=events)


def _op_json(op: TxnOp) -> dict[str, Any]:
    if isinstance(op, PutOp):
        return {"request_put": {"key": _b64(op.key), "value": _b64(op.value)}}
    body: dict[str, Any] = {"key": _b64(op.key)}
    if op.range_end is not None:
        body["range_end"] = _b64(op.range_end)
    return {"request_delete_range": body}


def _error_fields(body: Any) -> tuple[str, int | None]:
    """(message, gRPC code) from a gateway error body of any gateway generation."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # stream error: {"error": {"grpc_code"|"code", "message"}}
            code = err.get("grpc_code", err.get("code"))
            return str(err.get("message") or err), int(code) if code is not None else None
        message = body.get("message") or err or json.dumps(body)
        code = body.get("code")
        return str(message), int(code) if isinstance(code, int | str) and code != "" else None
    return str(body), None


def is_invalid_token(message: str, code: int | None) -> bool:
    """Whether etcd's error says our auth token is unknown or expired (either transport)."""
    return code == _GRPC_UNAUTHENTICATED or "invalid auth token" in message


def _classify(message: str, code: int | None, status: int | None) -> EtcdError:
    if code == _GRPC_OUT_OF_RANGE and "compacted" in message:
        return RevisionCompacted(message, code=code, status=status)
    if code == _GRPC_UNAVAILABLE or status in (502, 503, 504):
        return EtcdUnavailable(message, code=code, status=status)
    return EtcdError(message, code=code, status=status)


# --- NDJSON ---------------------------------------------------------------------------------------


class NDJSONReader:
    """Split a byte stream into lines on ``\\n`` only, with no cap on line length.

    Each chunk is scanned once and partial lines are kept as a list of pieces joined when the
    newline arrives, so a 15 MB line costs O(size), not O(size^2). We split bytes rather than
    using httpx's ``aiter_lines`` because that splits text on every Unicode line boundary
    (U+2028, U+0085, ...), which JSON allows unescaped inside strings.
    """

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._parts: list[bytes] = []
        self._lines: deque[bytes] = deque()

    async def readline(self) -> bytes | None:
        """The next non-empty line without its newline, or None at end of stream.

        A trailing fragment without a newline at EOF is dropped: the gateway terminates every
        message with a newline, so a fragment means the stream was cut mid-message.
        """
        while not self._lines:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return None
            start = 0
            while (nl := chunk.find(b"\n", start)) != -1:
                self._parts.append(chunk[start:nl])
                line = b"".join(self._parts)
                self._parts = []
                if line.strip():
                    self._lines.append(line)
                start = nl + 1
            if start < len(chunk):
                self._parts.append(chunk[start:])
        return self._lines.popleft()


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


class WatchStream(WatchStreamBase):
    """An established watch: iterate it for :class:`WatchResponse` messages.

    Iteration never ends normally: compaction raises :class:`WatchCompacted`, another cancel
    :class:`WatchCanceled`, and a stream that ends, breaks or idles past ``idle_timeout``
    raises :class:`WatchEnded`.
    """

    def __init__(self, reader: NDJSONReader, **info: Any):
        super().__init__(**info)
        self._reader = reader

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchResponse:
        result = await self._next_result()
        self.messages += 1
        return _parse_watch_result(result)

    async def _next_result(self) -> dict[str, Any]:
        timeout = self._idle_timeout if self._idle_timeout is not None else float("inf")
        line: bytes | None = None
        with trio.move_on_after(timeout) as scope:
            try:
                line = await self._reader.readline()
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise WatchEnded(f"watch stream broke: {exc!r}") from exc
        if scope.cancelled_caught:
            raise WatchEnded(f"watch stream silent for {timeout:.0f}s")
        if line is None:
            raise WatchEnded("watch stream ended")
        try:
            msg = fast_loads(line)
        except ValueError as exc:
            raise WatchEnded(f"undecodable watch message: {exc}") from exc
        result = msg.get("result") if isinstance(msg, dict) else None
        if result is None:
            message, code = _error_fields(msg)
            raise WatchEnded(f"watch stream error: {message}", code=code)
        if result.get("canceled"):
            compact = int(result.get("compact_revision", 0))
            if compact:
                raise WatchCompacted(compact)
            reason = str(result.get("cancel_reason", ""))
            raise WatchCanceled(f"watch cancelled: {reason or 'no reason given'}")
        return result  # type: ignore[no-any-return]


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


class EtcdClient(TokenAuth):
    """An etcd v3 client over the JSON gateway, for use inside one trio run.

    ``endpoints`` are URLs (``https://10.0.0.1:2379``) or ``host:port`` (then https if TLS files
    are given, else http). Requests go to the last endpoint that worked and fail over to the next
    on connection errors, timeouts and 503/Unavailable; :class:`EtcdUnavailable` means all
    failed. With ``username``/``password`` the client authenticates lazily, sends the token in
    the ``Authorization`` header, re-authenticates when etcd says the token is invalid, and
    refreshes tokens older than ``token_max_age`` (etcd's simple tokens expire after
    ``--auth-token-ttl``, 300 s by default, of disuse, and a watch-only client uses them rarely).

    Use as ``async with EtcdClient([...]) as client:`` (or call :meth:`aclose`).
    """

    @classmethod
    def with_access(cls, endpoints: Sequence[str] | str, access: EtcdAccess) -> EtcdClient:
        """A client for ``endpoints`` reached as ``access`` says."""
        return cls(
            endpoints,
            ca_file=access.ca_file,
            cert_file=access.cert_file,
            key_file=access.key_file,
            username=access.username,
            password=access.password,
            request_timeout=access.request_timeout,
            connect_timeout=access.connect_timeout,
        )

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        token_max_age: float = 60.0,
    ):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",")]
        self.endpoints = normalise_endpoints(endpoints, ca_file, cert_file)
        self.request_timeout = request_timeout
        self._init_auth(username, password, token_max_age)
        self._current = 0
        # Plain-HTTP endpoints never do TLS: no context with the CA bundle (httpx's default
        # loads certifi's, ~30 ms per client at start-up).
        verify: ssl.SSLContext | bool = False
        if any(e.startswith("https://") for e in self.endpoints):
            verify = tls_context(ca_file, cert_file, key_file)
        # The connect timeout is httpx's (on trio it is a trio cancel scope underneath): it has
        # to be per endpoint so that a black-holed member fails over long before the whole
        # request's trio deadline. Read/write/pool waits are left to our trio timeouts, because
        # a watch may legitimately be silent for minutes.
        self._http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(None, connect=connect_timeout),
            trust_env=False,  # etcd is reached directly; never through HTTP(S)_PROXY
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"Content-Type": "application/json"},
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close all pooled connections."""
        await self._http.aclose()

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next request tries first (the last one that worked)."""
        return self.endpoints[self._current]

    # -- auth -----------------------------------------------------------------------------------

    async def _fetch_token(self, username: str, password: str) -> str:
        reply = await self._post(
            "/v3/auth/authenticate", {"name": username, "password": password}, auth=False
        )
        return str(reply.get("token", ""))

    async def _auth_header(self) -> dict[str, str]:
        token = await self._auth_token()
        return {"Authorization": token} if token else {}

    # -- unary requests -------------------------------------------------------------------------

    def _build_request(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Request:
        request = self._http.build_request("POST", url, content=content, headers=headers)
        # build_request set Content-Length; swap httpx's generator-based body for ours.
        request.stream = OneShotBody(content)
        return request

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def _post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST ``body`` to ``path`` with failover and one re-authentication; return the JSON."""
        for attempt in range(2):
            generation = self._token_generation
            try:
                return await self._post_once(path, body, auth=auth)
            except TokenInvalid:
                self._drop_token(generation)
                if attempt:
                    raise EtcdError("etcd rejected a freshly issued auth token", code=16) from None
        raise AssertionError("unreachable")

    async def _post_once(self, path: str, body: dict[str, Any], *, auth: bool) -> dict[str, Any]:
        content = json.dumps(body, separators=(",", ":")).encode()
        errors: list[str] = []
        for idx in self._order():
            base = self.endpoints[idx]
            headers = await self._auth_header() if auth else {}
            request = self._build_request(base + path, content, headers)
            try:
                with trio.fail_after(self.request_timeout):
                    resp = await self._http.send(request)
            except (httpx.TransportError, trio.TooSlowError) as exc:
                errors.append(f"{base}: {_describe(exc)}")
                if isinstance(exc, trio.TooSlowError) and auth:
                    self._forget_token_after_timeout()
                continue
            if resp.status_code == 200:
                self._current = idx
                try:
                    result = fast_loads(resp.content)  # resp.json(), faster (list pages)
                except ValueError as exc:
                    raise EtcdError(f"undecodable reply from {base}{path}: {exc}") from exc
                if not isinstance(result, dict):
                    raise EtcdError(f"unexpected reply from {base}{path}: {resp.text[:200]}")
                return result
            try:
                err_body: Any = resp.json()
            except ValueError:
                err_body = resp.text
            message, code = _error_fields(err_body)
            if auth and self._username is not None and is_invalid_token(message, code):
                raise TokenInvalid(message)
            err = _classify(message, code, resp.status_code)
            if isinstance(err, EtcdUnavailable):
                errors.append(f"{base}: {resp.status_code} {message}")
                continue
            self._current = idx
            raise err
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    # -- KV API ---------------------------------------------------------------------------------

    async def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        revision: int | None = None,
        limit: int | None = None,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        """Read ``key`` (or ``[key, range_end)``), optionally at a past ``revision``.

        Raises :class:`RevisionCompacted` if ``revision`` is compacted.
        """
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if revision is not None:
            body["revision"] = str(revision)
        if limit is not None:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        if count_only:
            body["count_only"] = True
        reply = await self._post("/v3/kv/range", body)
        return RangeResult(
            kvs=[_parse_kv(kv) for kv in reply.get("kvs") or ()],
            revision=_header_revision(reply),
            more=bool(reply.get("more", False)),
            count=int(reply.get("count", 0)),
        )

    def range_paginated(
        self,
        prefix: str | bytes,
        revision: int | None = None,
        page_size: int = 1000,
        *,
        range_end: str | bytes | None = None,
        keys_only: bool = False,
    ) -> AsyncGenerator[RangeResult, None]:
        """Yield pages of ``page_size`` keys under ``prefix`` (or ``[prefix, range_end)``).

        Every page is read at the same revision: ``revision`` if given, else the revision the
        first page was served at, so the pages form one consistent snapshot. The first page is
        always yielded, even when empty, so callers learn the revision. Use with
        ``contextlib.aclosing`` when you may stop early. Raises :class:`RevisionCompacted` if
        the pinned revision is compacted mid-way.
        """
        return paginate(self.range, prefix, revision, page_size, range_end, keys_only)

    async def revision(self) -> int:
        """The current store revision."""
        return (await self.range(b"\0", count_only=True)).revision

    async def put(self, key: str | bytes, value: bytes) -> int:
        """Write one key; returns the new store revision."""
        reply = await self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return _header_revision(reply)

    async def delete(self, key: str | bytes, range_end: str | bytes | None = None) -> DeleteResult:
        """Delete ``key`` (or ``[key, range_end)``)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        reply = await self._post("/v3/kv/deleterange", body)
        return DeleteResult(int(reply.get("deleted", 0)), _header_revision(reply))

    async def txn(self, ops: Iterable[TxnOp]) -> int:
        """Apply puts/deletes atomically in one revision; returns that revision.

        etcd caps a txn at ``--max-txn-ops`` (128 by default) operations and
        ``--max-request-bytes`` (1.5 MiB), and rejects two puts of the same key in one txn;
        :mod:`typha.sync.etcd_writer` splits its batches accordingly.
        """
        body = {"success": [_op_json(op) for op in ops]}
        reply = await self._post("/v3/kv/txn", body)
        return _header_revision(reply)

    async def create(self, key: str | bytes, value: bytes) -> bool:
        """Put ``key`` only if it does not exist yet (a txn comparing its create revision with
        0); returns whether it was written.  Never overwrites."""
        body = {
            "compare": [
                {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [_op_json(PutOp(key, value))],
        }
        reply = await self._post("/v3/kv/txn", body)
        return bool(reply.get("succeeded", False))

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        """Discard history before ``revision``. With ``physical`` the call returns once the
        compaction has been applied to the backend (so later watches see it)."""
        await self._post("/v3/kv/compaction", {"revision": str(revision), "physical": physical})

    async def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status`` of the current endpoint (version, db size, leader...)."""
        return await self._post("/v3/maintenance/status", {})

    # -- watch ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        start_revision: int | None = None,
        *,
        progress_notify: bool = True,
        prev_kv: bool = False,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[WatchStream]:
        """Open a watch on ``key`` (or ``[key, range_end)``) from ``start_revision``.

        The context manager returns once etcd confirmed the watch (the ``created`` message) and
        closes the HTTP stream on exit. A compacted ``start_revision`` raises
        :class:`WatchCompacted` on opening or on the first iteration (etcd 3.4 confirms the
        watch before cancelling it); :class:`EtcdUnavailable` means no endpoint answered.
        ``idle_timeout`` turns a stream that is silent that long into :class:`WatchEnded`; set
        it above the server's progress-notify interval (``--watch-progress-notify-interval``,
        10 min by default) when ``progress_notify`` is on.
        """
        create: dict[str, Any] = {"key": _b64(key), "progress_notify": progress_notify}
        if range_end is not None:
            create["range_end"] = _b64(range_end)
        if start_revision is not None:
            create["start_revision"] = str(start_revision)
        if prev_kv:
            create["prev_kv"] = True
        content = json.dumps({"create_request": create}).encode()
        for attempt in range(2):
            generation = self._token_generation
            try:
                async with self._open_watch(content, idle_timeout) as stream:
                    yield stream
                return
            except TokenInvalid:
                self._drop_token(generation)
                if attempt:
                    raise EtcdError("etcd rejected a freshly issued auth token", code=16) from None

    @contextlib.asynccontextmanager
    async def _open_watch(
        self, content: bytes, idle_timeout: float | None
    ) -> AsyncIterator[WatchStream]:
        errors: list[str] = []
        for idx in self._order():
            base = self.endpoints[idx]
            headers = await self._auth_header()
            request = self._build_request(base + "/v3/watch", content, headers)
            try:
                with trio.fail_after(self.request_timeout):
                    response = await self._http.send(request, stream=True)
            except (httpx.TransportError, trio.TooSlowError) as exc:
                errors.append(f"{base}: {_describe(exc)}")
                continue
            try:
                if response.status_code != 200:
                    with trio.move_on_after(self.request_timeout):
                        await response.aread()
                    message, code = _error_fields(_json_or_text(response))
                    if self._username is not None and is_invalid_token(message, code):
                        raise TokenInvalid(message)
                    err = _classify(message, code, response.status_code)
                    if isinstance(err, EtcdUnavailable):
                        errors.append(f"{base}: {response.status_code} {message}")
                        continue
                    raise err
                chunks = response.aiter_bytes()
                try:
                    reader = NDJSONReader(chunks)
                    first = await self._first_watch_message(reader, base)
                    if first is None:
                        errors.append(f"{base}: watch stream closed before it was created")
                        continue
                    self._current = idx
                    header = first.get("header") or {}
                    stream = WatchStream(
                        reader,
                        endpoint=base,
                        created_revision=int(header.get("revision", 0)),
                        cluster_id=str(header.get("cluster_id", "")),
                        idle_timeout=idle_timeout,
                    )
                    yield stream
                    return
                finally:
                    await finish_stream(chunks)
            finally:
                await response.aclose()
        raise EtcdUnavailable("no etcd endpoint accepted the watch: " + "; ".join(errors))

    async def _first_watch_message(self, reader: NDJSONReader, base: str) -> dict[str, Any] | None:
        """Read the ``created`` confirmation; map an immediate cancel to its exception."""
        try:
            with trio.fail_after(self.request_timeout):
                line = await reader.readline()
        except (httpx.TransportError, httpx.StreamError, trio.TooSlowError):
            return None
        if line is None:
            return None
        try:
            msg = fast_loads(line)
        except ValueError as exc:
            raise EtcdError(f"undecodable first watch message from {base}: {exc}") from exc
        result = msg.get("result") if isinstance(msg, dict) else None
        if result is None:
            message, code = _error_fields(msg)
            if self._username is not None and is_invalid_token(message, code):
                raise TokenInvalid(message)
            raise _classify(message, code, None)
        if result.get("canceled"):
            compact = int(result.get("compact_revision", 0))
            if compact:
                raise WatchCompacted(compact)
            reason = str(result.get("cancel_reason", ""))
            if self._username is not None and is_invalid_token(reason, None):
                raise TokenInvalid(reason)
            raise WatchCanceled(f"watch refused: {reason or 'no reason given'}")
        if not result.get("created"):
            raise EtcdError(f"unexpected first watch message from {base}: {line[:200]!r}")
        return result  # type: ignore[no-any-return]


def _describe(exc: BaseException) -> str:
    """``Type: message``, taking the message from the first cause that has one (httpx's
    ConnectError around an SSL error has an empty message of its own)."""
    cause: BaseException | None = exc
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return type(exc).__name__
    if cause is exc:
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {type(cause).__name__}: {cause}"


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


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
