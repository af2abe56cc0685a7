"""A small etcd v3 client for trio, speaking etcd's gRPC-JSON gateway (``/v3/...``) over httpx
(``EtcdAPI = gateway``; the default is gRPC, :mod:`typha.sync.etcd_grpc`). What both clients share
(errors, data types, token auth, pagination) lives in :mod:`typha.sync.etcd_common` and is
re-exported here.

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
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
import structlog
import trio

from typha.httpstreams import OneShotBody, finish_stream
from typha.jsonlimit import fast_loads
from typha.sync.etcd_common import (
    DEFAULT_ENDPOINT,
    GRPC_OUT_OF_RANGE,
    GRPC_UNAUTHENTICATED,
    GRPC_UNAVAILABLE,
    AuthenticationFailed,
    DeleteOp,
    DeleteResult,
    EtcdAccess,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    PutOp,
    RangeResult,
    RevisionCompacted,
    TokenAuth,
    TokenInvalid,
    TxnOp,
    WatchCanceled,
    WatchCompacted,
    WatchEnded,
    WatchEvent,
    WatchResponse,
    WatchStreamBase,
    _as_bytes,
    is_invalid_token,
    normalise_endpoints,
    paginate,
    prefix_range_end,
    tls_context,
)

# The shared names moved to typha.sync.etcd_common are re-exported: existing imports keep working.
__all__ = [
    "DEFAULT_ENDPOINT",
    "GRPC_OUT_OF_RANGE",
    "GRPC_UNAUTHENTICATED",
    "GRPC_UNAVAILABLE",
    "AuthenticationFailed",
    "DeleteOp",
    "DeleteResult",
    "EtcdAccess",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "NDJSONReader",
    "PutOp",
    "RangeResult",
    "RevisionCompacted",
    "TokenAuth",
    "TokenInvalid",
    "TxnOp",
    "WatchCanceled",
    "WatchCompacted",
    "WatchEnded",
    "WatchEvent",
    "WatchResponse",
    "WatchStream",
    "WatchStreamBase",
    "is_invalid_token",
    "normalise_endpoints",
    "paginate",
    "prefix_range_end",
    "tls_context",
]

log = structlog.get_logger()


def _b64(data: str | bytes) -> str:
    return binascii.b2a_base64(_as_bytes(data), newline=False).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return binascii.a2b_base64(data) if data else b""


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


def _classify(message: str, code: int | None, status: int | None) -> EtcdError:
    if code == GRPC_OUT_OF_RANGE and "compacted" in message:
        return RevisionCompacted(message, code=code, status=status)
    if code == GRPC_UNAVAILABLE or status in (502, 503, 504):
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


# --- client ---------------------------------------------------------------------------------------


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
        async with self._reauthenticating_watch(self._open_watch, content, idle_timeout) as stream:
            yield stream

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
