"""The etcd v3 client over etcd's gRPC API (``EtcdAPI = grpc``), with the same API and types as
the JSON-gateway client (:mod:`typha.sync.etcd_client`) for what the etcd datastore and the
start-up writes use: range/range_paginated, revision, put, delete, txn, create, compact,
status and watch.

Why (docs/benchmarks.md, "etcd: JSON gateway vs gRPC"): the gateway is a JSON proxy *inside*
etcd in front of its own gRPC server; speaking gRPC directly saves etcd that work and us the
JSON and base64 decoding. HTTP/2 comes from :mod:`typha.sync.grpc_h2`, the messages from
:mod:`typha.sync.etcd_pb` (protobuf's C runtime decodes them).

TLS and etcd's password authentication behave as with the gateway client (same settings, same
errors): https endpoints (and ``host:port`` when TLS files are given) are reached over TLS
with ALPN "h2" (gRPC requires HTTP/2 to be agreed that way), the server verified against the
CA file and the client certificate presented; with a username the client calls
``Auth/Authenticate`` and sends the token as the ``token`` metadata of every call, sharing the
gateway client's token handling (:class:`typha.sync.etcd_client.TokenAuth`: lazy, refreshed
after ``token_max_age``, re-authenticated once when etcd answers UNAUTHENTICATED / "invalid auth
token" to a call or cancels a new watch for that reason, credentials ignored when etcd has auth
disabled).

Connections: unary calls share one HTTP/2 connection to the current endpoint; every watch has
a connection of its own (as a gateway watch has its own HTTP request), so a watch that its
consumer leaves unread pushes back on etcd without ever delaying a list page or a probe.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from typha.sync import etcd_pb as pb
from typha.sync.etcd_common import (
    DEFAULT_ENDPOINT,
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
    is_invalid_token,
    normalise_endpoints,
    paginate,
    tls_context,
)
from typha.sync.grpc_h2 import (
    OUT_OF_RANGE,
    UNAVAILABLE,
    GrpcConnection,
    GrpcError,
    GrpcStream,
    Metadata,
    h2_tls_context,
)

_KV = "/etcdserverpb.KV/"
_WATCH = "/etcdserverpb.Watch/Watch"
_STATUS = "/etcdserverpb.Maintenance/Status"
_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
_DELETE = pb.Event.DELETE
_CREATE = pb.Compare.CREATE
_EQUAL = pb.Compare.EQUAL


def _classify(exc: GrpcError) -> EtcdError:
    if exc.status == OUT_OF_RANGE and "compacted" in exc.message:
        return RevisionCompacted(exc.message, code=exc.status)
    if exc.status == UNAVAILABLE:
        return EtcdUnavailable(exc.message, code=exc.status)
    return EtcdError(exc.message, code=exc.status)


def _kv(kv: Any) -> KeyValue:
    # Hot path (once per key listed or event watched).
    return KeyValue(
        kv.key.decode("utf-8", "surrogateescape"),
        kv.value,
        kv.mod_revision,
        kv.create_revision,
        kv.version,
    )


def _watch_response(resp: Any) -> WatchResponse:
    events = [
        WatchEvent(
            "DELETE" if ev.type == _DELETE else "PUT",
            _kv(ev.kv),
            _kv(ev.prev_kv) if ev.HasField("prev_kv") else None,
        )
        for ev in resp.events
    ]
    return WatchResponse(resp.header.revision, events)


def _as_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")


def _op(op: TxnOp) -> Any:
    if isinstance(op, PutOp):
        return pb.RequestOp(request_put=pb.PutRequest(key=_as_bytes(op.key), value=op.value))
    assert isinstance(op, DeleteOp)
    req = pb.DeleteRangeRequest(key=_as_bytes(op.key))
    if op.range_end is not None:
        req.range_end = _as_bytes(op.range_end)
    return pb.RequestOp(request_delete_range=req)


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    if parts.hostname is None:
        raise ValueError(f"not an etcd endpoint URL: {endpoint!r}")
    return parts.hostname, parts.port or 2379


class GrpcWatchStream(WatchStreamBase):
    """An established watch (same contract as :class:`typha.sync.etcd_client.WatchStream`):
    iteration never ends normally; compaction raises :class:`WatchCompacted`, another cancel
    :class:`WatchCanceled`, and a stream that ends, breaks or idles past ``idle_timeout``
    :class:`WatchEnded`."""

    def __init__(self, stream: GrpcStream, **info: Any):
        super().__init__(**info)
        self._stream = stream

    def __aiter__(self) -> GrpcWatchStream:
        return self

    async def __anext__(self) -> WatchResponse:
        timeout = self._idle_timeout if self._idle_timeout is not None else math.inf
        raw: bytes | None = None
        with trio.move_on_after(timeout) as scope:
            try:
                raw = await self._stream.receive()
            except GrpcError as exc:
                raise WatchEnded(f"watch stream broke: {exc}", code=exc.status) from exc
        if scope.cancelled_caught:
            raise WatchEnded(f"watch stream silent for {timeout:.0f}s")
        if raw is None:
            raise WatchEnded("watch stream ended")
        resp = _decode_watch(raw)
        if resp.canceled:
            if resp.compact_revision:
                raise WatchCompacted(resp.compact_revision)
            raise WatchCanceled(f"watch cancelled: {resp.cancel_reason or 'no reason given'}")
        self.messages += 1
        return _watch_response(resp)


def _decode_watch(raw: bytes) -> Any:
    try:
        return pb.WatchResponse.FromString(raw)
    except DecodeError as exc:
        raise WatchEnded(f"undecodable watch message: {exc}") from exc


class GrpcEtcdClient(TokenAuth):
    """An etcd v3 client over gRPC, for use inside one trio run, as
    ``async with GrpcEtcdClient([...]) as client:``. Same constructor arguments as
    :class:`typha.sync.etcd_client.EtcdClient`.

    ``endpoints`` are URLs (``https://10.0.0.1:2379``) or ``host:port`` (then https if TLS files
    are given, else http). Requests go to the last endpoint that worked and fail over to the next
    on connection errors (a failed TLS handshake too), timeouts and UNAVAILABLE;
    :class:`EtcdUnavailable` means all failed. With ``username``/``password``: see the module
    doc.
    """

    @classmethod
    def with_access(cls, endpoints: Sequence[str] | str, access: EtcdAccess) -> GrpcEtcdClient:
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
            endpoints = endpoints.split(",")
        self.endpoints = normalise_endpoints(endpoints, ca_file, cert_file)
        self._addrs = [_host_port(e) for e in self.endpoints]
        # One context for every TLS connection of this client (its own: ALPN "h2" only).
        self._ssl: ssl.SSLContext | None = None
        if any(e.startswith("https://") for e in self.endpoints):
            self._ssl = h2_tls_context(tls_context(ca_file, cert_file, key_file))
        self._tls = [e.startswith("https://") for e in self.endpoints]
        self._init_auth(username, password, token_max_age)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._current = 0
        self._conn: GrpcConnection | None = None
        self._conn_idx = -1
        self._connect_lock: trio.Lock | None = None
        self._new_conn: trio.Event | None = None  # set when a unary connection opens

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> GrpcEtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def _connect(self, idx: int) -> GrpcConnection:
        host, port = self._addrs[idx]
        with trio.fail_after(self.connect_timeout):
            return await GrpcConnection.connect(host, port, self._ssl if self._tls[idx] else None)

    async def _unary_connection(self, idx: int) -> GrpcConnection:
        """The shared connection to endpoint ``idx`` (opened, or replaced if it broke)."""
        if self._connect_lock is None:
            self._connect_lock = trio.Lock()
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and self._conn_idx == idx and await conn.check():
                return conn
            if conn is not None:
                self._conn = None
                await conn.aclose()
            self._conn = await self._connect(idx)
            self._conn_idx = idx
            if self._new_conn is not None:
                self._new_conn.set()
            return self._conn

    async def read_idle_connection(self) -> None:
        """Read the shared unary connection whenever one is open, until cancelled (the etcd
        datastore runs this beside its work). Nothing else reads it between calls, so without
        this an etcd that stops gracefully waits for us: its GOAWAY and PING go unanswered and
        it holds its shutdown ~5 s for the idle connection. With it, the connection is closed
        as soon as etcd says GOAWAY and no call is left on it (the next call opens a new one),
        and a dead connection is noticed before the next call needs it."""
        while True:
            conn = self._conn
            if conn is None or not conn.usable:
                self._new_conn = trio.Event()
                await self._new_conn.wait()
                continue
            await conn.read_until_done()
            if self._conn is conn:
                await self._drop(conn)

    async def _drop(self, conn: GrpcConnection) -> None:
        if self._conn is conn:
            self._conn = None
        await conn.aclose()

    async def _metadata(self) -> Metadata:
        token = await self._auth_token()
        return [(b"token", token.encode())] if token else ()

    async def _fetch_token(self, username: str, password: str) -> str:
        req = pb.AuthenticateRequest(name=username, password=password)
        return str(
            (await self._unary(_AUTHENTICATE, req, pb.AuthenticateResponse, auth=False)).token
        )

    async def _unary(self, method: str, request: Any, reply_type: Any, *, auth: bool = True) -> Any:
        """``request`` to ``method`` with failover and one re-authentication; the reply decoded
        as ``reply_type``."""
        body = request.SerializeToString()
        for attempt in range(2):
            generation = self._token_generation
            try:
                raw = await self._unary_raw(method, body, auth=auth)
                break
            except TokenInvalid:
                self._drop_token(generation)
                if attempt:
                    raise EtcdError("etcd rejected a freshly issued auth token", code=16) from None
        try:
            return reply_type.FromString(raw)
        except DecodeError as exc:
            raise EtcdError(f"undecodable reply to {method}: {exc}") from exc

    async def _unary_raw(self, method: str, body: bytes, *, auth: bool) -> bytes:
        errors: list[str] = []
        for idx in self._order():
            base = self.endpoints[idx]
            metadata = await self._metadata() if auth else ()
            conn: GrpcConnection | None = None
            try:
                with trio.fail_after(self.request_timeout):
                    conn = await self._unary_connection(idx)
                    reply = await conn.unary(method, body, metadata)
            except (OSError, trio.TooSlowError) as exc:
                # Refused, unreachable, or no answer in time (a hung etcd): drop the
                # connection, it may be stuck behind a half-read reply.
                if conn is not None:
                    await self._drop(conn)
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
                if isinstance(exc, trio.TooSlowError) and auth:
                    self._forget_token_after_timeout()
                continue
            except GrpcError as exc:
                if (
                    auth
                    and self._username is not None
                    and is_invalid_token(exc.message, exc.status)
                ):
                    raise TokenInvalid(exc.message) from exc
                err = _classify(exc)
                if isinstance(err, EtcdUnavailable):
                    errors.append(f"{base}: {exc}")
                    continue
                self._current = idx
                raise err from exc
            self._current = idx
            return reply
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
        Raises :class:`RevisionCompacted` if ``revision`` is compacted."""
        req = pb.RangeRequest(
            key=_as_bytes(key),
            revision=revision or 0,
            limit=limit or 0,
            keys_only=keys_only,
            count_only=count_only,
        )
        if range_end is not None:
            req.range_end = _as_bytes(range_end)
        resp = await self._unary(_KV + "Range", req, pb.RangeResponse)
        return RangeResult(
            [_kv(kv) for kv in resp.kvs], resp.header.revision, resp.more, resp.count
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
        """Pages of ``page_size`` keys, all at one revision (as
        :meth:`typha.sync.etcd_client.EtcdClient.range_paginated`)."""
        return paginate(self.range, prefix, revision, page_size, range_end, keys_only)

    async def revision(self) -> int:
        return (await self.range(b"\0", count_only=True)).revision

    async def put(self, key: str | bytes, value: bytes) -> int:
        req = pb.PutRequest(key=_as_bytes(key), value=value)
        return int((await self._unary(_KV + "Put", req, pb.PutResponse)).header.revision)

    async def delete(self, key: str | bytes, range_end: str | bytes | None = None) -> DeleteResult:
        req = pb.DeleteRangeRequest(key=_as_bytes(key))
        if range_end is not None:
            req.range_end = _as_bytes(range_end)
        resp = await self._unary(_KV + "DeleteRange", req, pb.DeleteRangeResponse)
        return DeleteResult(resp.deleted, resp.header.revision)

    async def txn(self, ops: Iterable[TxnOp]) -> int:
        """Apply puts/deletes atomically in one revision; returns that revision."""
        req = pb.TxnRequest(success=[_op(op) for op in ops])
        return int((await self._unary(_KV + "Txn", req, pb.TxnResponse)).header.revision)

    async def create(self, key: str | bytes, value: bytes) -> bool:
        """Put ``key`` only if it does not exist yet; returns whether it was written."""
        req = pb.TxnRequest(
            compare=[
                pb.Compare(key=_as_bytes(key), target=_CREATE, result=_EQUAL, create_revision=0)
            ],
            success=[_op(PutOp(key, value))],
        )
        return bool((await self._unary(_KV + "Txn", req, pb.TxnResponse)).succeeded)

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        req = pb.CompactionRequest(revision=revision, physical=physical)
        await self._unary(_KV + "Compact", req, pb.CompactionResponse)

    async def status(self) -> dict[str, Any]:
        """Maintenance/Status of the current endpoint, shaped as the gateway's JSON."""
        resp = await self._unary(_STATUS, pb.StatusRequest(), pb.StatusResponse)
        return MessageToDict(resp, preserving_proto_field_name=True)

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
    ) -> AsyncIterator[GrpcWatchStream]:
        """Open a watch (same contract as :meth:`typha.sync.etcd_client.EtcdClient.watch`),
        on a connection of its own that is closed on exit."""
        create = pb.WatchCreateRequest(
            key=_as_bytes(key),
            start_revision=start_revision or 0,
            progress_notify=progress_notify,
            prev_kv=prev_kv,
        )
        if range_end is not None:
            create.range_end = _as_bytes(range_end)
        body = pb.WatchRequest(create_request=create).SerializeToString()
        async with self._reauthenticating_watch(self._open_watch, body, idle_timeout) as stream:
            yield stream

    @contextlib.asynccontextmanager
    async def _open_watch(
        self, body: bytes, idle_timeout: float | None
    ) -> AsyncIterator[GrpcWatchStream]:
        errors: list[str] = []
        for idx in self._order():
            base = self.endpoints[idx]
            metadata = await self._metadata()
            try:
                conn = await self._connect(idx)
            except (OSError, trio.TooSlowError, GrpcError) as exc:
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
                continue
            try:
                try:
                    with trio.fail_after(self.request_timeout):
                        stream = await conn.open_stream(_WATCH, body, metadata)
                        first = await self._first_watch_message(stream)
                except trio.TooSlowError:
                    errors.append(f"{base}: the watch was not confirmed in time")
                    self._forget_token_after_timeout()
                    continue
                except GrpcError as exc:
                    if self._username is not None and is_invalid_token(exc.message, exc.status):
                        raise TokenInvalid(exc.message) from exc
                    err = _classify(exc)
                    if isinstance(err, EtcdUnavailable):
                        errors.append(f"{base}: {exc}")
                        continue
                    raise err from exc
                if first is None:
                    errors.append(f"{base}: watch stream closed before it was created")
                    continue
                self._current = idx
                yield GrpcWatchStream(
                    stream,
                    endpoint=base,
                    created_revision=first.header.revision,
                    cluster_id=str(first.header.cluster_id or ""),
                    idle_timeout=idle_timeout,
                )
                return
            finally:
                await conn.aclose()
        raise EtcdUnavailable("no etcd endpoint accepted the watch: " + "; ".join(errors))

    async def _first_watch_message(self, stream: GrpcStream) -> Any:
        """The ``created`` confirmation; an immediate cancel raises its exception."""
        raw = await stream.receive()
        if raw is None:
            return None
        resp = _decode_watch(raw)
        if resp.canceled:
            if resp.compact_revision:
                raise WatchCompacted(resp.compact_revision)
            reason = resp.cancel_reason
            if self._username is not None and is_invalid_token(reason, None):
                raise TokenInvalid(reason)
            raise WatchCanceled(f"watch refused: {reason or 'no reason given'}")
        if not resp.created:
            raise EtcdError(f"unexpected first watch message: {resp}")
        return resp
