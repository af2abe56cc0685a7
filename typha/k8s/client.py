"""A small Kubernetes API client on httpx for trio: list, watch, CRUD.

Why hand-written (docs/kubernetes.md): kubernetes-asyncio is asyncio-only (it would need
trio-asyncio and aiohttp) and measured 3x slower than raw httpx + ``json.loads`` on a watch
stream (docs/dependencies.md). Typha needs only list (paginated), watch (NDJSON with bookmarks),
get and a few writes, so the client is ~600 lines.

* :class:`KubeConfig` (``kubeconfig.py``) — where the apiserver is and how to authenticate.
* :class:`KubeClient` — ``list``/``list_pages`` (``limit``/``continue``), ``open_watch`` (a
  context manager giving a :class:`WatchStream`) and ``watch`` (an async generator: wrap it in
  ``contextlib.aclosing``), ``get``/``create``/``replace``/``patch``/``apply``/``delete``/
  ``delete_collection`` with ``dryRun``.
* Errors: :class:`ResourceExpired` (HTTP 410, a watch ERROR event with code 410, "too old
  resource version", an expired ``continue`` token, or "too large resource version"),
  :class:`ResourceNotFound` (404: object absent, or the resource type — e.g. a CRD — not
  served), :class:`KubeUnavailable` (transport errors, 5xx, 429), :class:`KubeApiError` (other
  definitive answers; :class:`KubeConflict` for 409, :class:`KubeForbidden` for 401/403).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import structlog

from typha import jsonlimit
from typha.httpstreams import OneShotBody, finish_stream

from .kubeconfig import KubeConfig

log = structlog.get_logger(__name__)

# --- errors -----------------------------------------------------------------------------------


class KubeError(Exception):
    """A Kubernetes API request failed. ``status`` is the HTTP status (None: no answer)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        body: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body = dict(body) if body else {}


class KubeUnavailable(KubeError):
    """No usable answer: connection refused/reset, timeout, 5xx, or throttled (429)."""

    @property
    def throttled(self) -> bool:
        return self.status == 429


class KubeApiError(KubeError):
    """A definitive error answer from the apiserver (4xx other than the subclasses below)."""


class ResourceExpired(KubeApiError):
    """The resourceVersion (or continue token) is too old — or too new: list again."""


class ResourceNotFound(KubeApiError):
    """404: the object does not exist, or the resource type is not served (CRD missing)."""


class KubeConflict(KubeApiError):
    """409: AlreadyExists or a resourceVersion conflict."""


class KubeForbidden(KubeApiError):
    """401/403: authentication or RBAC refused the request."""


def _is_expired_status(code: int | None, reason: str, message: str) -> bool:
    text = message.lower()
    return (
        code == 410
        or reason in ("Expired", "Gone")
        or "too old resource version" in text
        or "too large resource version" in text
    )


def error_from_status(
    code: int | None, body: Mapping[str, Any] | None, text: str = "", *, what: str = ""
) -> KubeError:
    """Map an HTTP status (and a ``Status`` body, if any) to the typed error."""
    body = body or {}
    message = str(body.get("message") or text.strip() or f"HTTP {code}")
    reason = str(body.get("reason") or "")
    if what:
        message = f"{what}: {message}"
    kwargs: dict[str, Any] = {"status": code, "reason": reason, "body": body}
    if _is_expired_status(code, reason, message):
        return ResourceExpired(message, **kwargs)
    if code == 404:
        return ResourceNotFound(message, **kwargs)
    if code == 409:
        return KubeConflict(message, **kwargs)
    if code in (401, 403):
        return KubeForbidden(message, **kwargs)
    if code is None or code == 429 or code >= 500:
        return KubeUnavailable(message, **kwargs)
    return KubeApiError(message, **kwargs)


# --- paths ------------------------------------------------------------------------------------


def resource_path(
    api_version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/namespaces/ns/pods/p/status``-style paths (``api_version`` ``v1`` or
    ``group/version``)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
    return "/".join(parts)


# --- results ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ListPage:
    """One page of a list: its items (``kind``/``apiVersion`` filled in) and the list RV."""

    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str


@dataclass(slots=True)
class ListResult:
    items: list[dict[str, Any]]
    resource_version: str


class WatchEvent(NamedTuple):
    """``(type, object)``: type is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: dict[str, Any]


def _item_kind(list_kind: str) -> str:
    return list_kind[: -len("List")] if list_kind.endswith("List") else list_kind


class WatchStream:
    """An open watch. Iterate events (``async for ev in stream``) or batches
    (``await stream.next_batch()``: the events parsed from one network read, None at the end).

    The stream ends quietly (``end_reason`` says why) when the server closes it (timeoutSeconds
    elapsed), the connection breaks, or nothing arrived for ``idle_timeout``: resume with a new
    watch from the last resourceVersion seen. An ERROR event raises — after the events that
    preceded it were returned: :class:`ResourceExpired` for code 410 / "too old resource
    version", else the mapped error.
    """

    def __init__(self, response: httpx.Response, what: str):
        self._response = response
        self._chunks: AsyncGenerator[bytes, None] = response.aiter_bytes()  # type: ignore[assignment]
        self._pending = bytearray()
        self._queue: deque[WatchEvent] = deque()
        self._error: KubeError | None = None
        self._done = False
        self.what = what
        self.end_reason = ""
        self.events = 0
        self.bytes = 0

    async def next_batch(self) -> list[WatchEvent] | None:
        """The next events (at least one), or None when the stream has ended."""
        while True:
            if self._error is not None:
                err, self._error = self._error, None
                self._done = True
                raise err
            if self._done:
                return None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                self.end_reason = "closed by server"
                chunk = b"\n"
            except httpx.TimeoutException:
                self._done = True
                self.end_reason = "idle timeout"
                return None
            except (httpx.RequestError, httpx.StreamError) as exc:
                self._done = True
                self.end_reason = f"stream broke: {type(exc).__name__}: {exc}"
                return None
            self.bytes += len(chunk)
            pending = self._pending
            pending += chunk
            if b"\n" not in chunk:
                continue
            lines = pending.split(b"\n")
            self._pending = bytearray(lines.pop())
            batch = self._parse(lines)
            if batch:
                self.events += len(batch)
                return batch

    def _parse(self, lines: list[bytearray]) -> list[WatchEvent]:
        out: list[WatchEvent] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                # Never fails for depth: an object nested too deep is marked (see jsonlimit).
                msg = jsonlimit.loads_marking(line)
            except ValueError as exc:
                self._error = KubeUnavailable(f"{self.what}: bad watch line: {exc}")
                break
            if not isinstance(msg, dict) or not isinstance(msg.get("object") or {}, dict):
                self._error = KubeUnavailable(f"{self.what}: bad watch line: not an event")
                break
            etype = msg.get("type", "")
            obj = msg.get("object") or {}
            if etype == "ERROR":
                code = obj.get("code")
                self._error = error_from_status(
                    int(code) if isinstance(code, int) else None, obj, what=self.what
                )
                break
            out.append(WatchEvent(etype, obj))
        return out

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._queue:
            batch = await self.next_batch()
            if batch is None:
                raise StopAsyncIteration
            self._queue.extend(batch)
        return self._queue.popleft()

    async def aclose(self) -> None:
        self._done = True
        await finish_stream(self._chunks)
        await self._response.aclose()


# --- the client -------------------------------------------------------------------------------


class KubeClient:
    """Async Kubernetes API client (httpx, trio-native). Use ``async with KubeClient(cfg)``."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 64,
        user_agent: str = "typha-py",
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        """``trust_env=False`` ignores proxy environment variables (set ``proxy-url`` in the
        kubeconfig instead); ``max_connections`` must exceed the number of concurrent watches
        (each holds one HTTP/1.1 connection); ``transport`` is for tests (httpx.MockTransport).
        """
        self.config = config
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
        self._http = httpx.AsyncClient(
            **config.httpx_kwargs(),
            **extra,
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            trust_env=trust_env,
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plain requests ----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body (or text) of a 2xx answer, else raises
        the typed error."""
        hdrs = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        body = content.encode() if isinstance(content, str) else (content or b"")
        request = self._http.build_request(
            method,
            path,
            params=_clean(params),
            headers=hdrs,
            content=body or None,
            timeout=httpx.Timeout(timeout, connect=self.timeout.connect)
            if timeout is not None
            else self.timeout,
        )
        request.stream = OneShotBody(body)
        what = f"{method} {path}"
        try:
            resp = await self._http.send(request)
        except httpx.RequestError as exc:
            raise KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        if resp.is_success:
            if not resp.content:
                return {}
            try:
                return jsonlimit.loads_marking(resp.content)
            except ValueError:
                return resp.text
        raise _response_error(resp, what)

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", path, params=params)
        return result

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ResourceNotFound:
            return None

    async def create(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to the collection ``path``."""
        result: dict[str, Any] = await self.request(
            "POST", path, params=_write_params(dry_run, field_manager), json_body=body
        )
        return result

    async def replace(
        self, path: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """PUT ``body`` to the object ``path`` (include metadata.resourceVersion to guard)."""
        result: dict[str, Any] = await self.request(
            "PUT", path, params=_write_params(dry_run, None), json_body=body
        )
        return result

    async def patch(
        self,
        path: str,
        body: Any,
        *,
        patch_type: str = "merge",
        dry_run: bool = False,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict[str, Any]:
        """PATCH the object ``path``; ``patch_type`` is merge, strategic, json or apply."""
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
            "apply": "application/apply-patch+yaml",
        }[patch_type]
        params = _write_params(dry_run, field_manager)
        if force is not None:
            params["force"] = "true" if force else "false"
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params=params,
            content=json.dumps(body),
            headers={"Content-Type": content_type},
        )
        return result

    async def apply(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        field_manager: str = "typha-py",
        force: bool = True,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply ``body`` at the object ``path`` (creates or updates)."""
        return await self.patch(
            path,
            body,
            patch_type="apply",
            dry_run=dry_run,
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self,
        path: str,
        *,
        dry_run: bool = False,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]:
        """DELETE the object ``path``."""
        params = _write_params(dry_run, None)
        if grace_period_seconds is not None:
            params["gracePeriodSeconds"] = str(grace_period_seconds)
        if propagation_policy:
            params["propagationPolicy"] = propagation_policy
        result: dict[str, Any] = await self.request("DELETE", path, params=params)
        return result

    async def delete_collection(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        grace_period_seconds: int | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE every object of the collection ``path`` (optionally by label selector)."""
        params = _write_params(dry_run, None)
        if label_selector:
            params["labelSelector"] = label_selector
        if grace_period_seconds is not None:
            params["gracePeriodSeconds"] = str(grace_period_seconds)
        result: dict[str, Any] = await self.request("DELETE", path, params=params)
        return result

    # -- list ----------------------------------------------------------------------------------

    async def list_pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        page_size: int = 500,
        timeout: float | None = None,
    ) -> AsyncIterator[ListPage]:
        """Pages of a list (``limit``/``continue``). An async generator: wrap it in
        ``contextlib.aclosing``. The first page fixes the resourceVersion of the whole list;
        an expired continue token raises :class:`ResourceExpired` (list again)."""
        query = dict(_clean(params) or {})
        if page_size:
            query["limit"] = str(page_size)
        token = ""
        while True:
            if token:
                query["continue"] = token
            body = await self.request("GET", path, params=query, timeout=timeout)
            if not isinstance(body, dict):
                raise KubeApiError(f"GET {path}: not a list: {str(body)[:200]}")
            meta = body.get("metadata") or {}
            kind = _item_kind(str(body.get("kind") or ""))
            api_version = str(body.get("apiVersion") or "")
            items = body.get("items") or []
            for item in items:
                # Lists of built-in types omit kind/apiVersion on each item.
                if "kind" not in item and kind:
                    item["kind"] = kind
                if "apiVersion" not in item and api_version:
                    item["apiVersion"] = api_version
            token = str(meta.get("continue") or "")
            yield ListPage(items, str(meta.get("resourceVersion") or ""), token)
            if not token:
                return

    async def list(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        page_size: int = 500,
    ) -> ListResult:
        """Every item of a collection (all pages) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        rv = ""
        async with contextlib.aclosing(self.list_pages(path, params, page_size=page_size)) as pages:
            async for page in pages:
                items.extend(page.items)
                rv = rv or page.resource_version
        return ListResult(items, rv)

    # -- watch ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_watch(
        self,
        path: str,
        resource_version: str | None = None,
        *,
        timeout_seconds: int = 300,
        bookmarks: bool = True,
        params: Mapping[str, Any] | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[WatchStream]:
        """Open a watch from ``resource_version`` (None/"": from "now", with synthetic ADDED
        events for what exists). Raises the typed error if the server refuses the watch
        (410 → :class:`ResourceExpired`, 404 → :class:`ResourceNotFound`).

        ``timeout_seconds`` asks the server to end the watch (it is then resumed by the
        caller); ``idle_timeout`` (default ``timeout_seconds + 30``) ends the stream when
        nothing at all arrived for that long (a half-open connection).
        """
        query: dict[str, Any] = dict(_clean(params) or {})
        query["watch"] = "1"
        query["timeoutSeconds"] = str(int(timeout_seconds))
        if bookmarks:
            query["allowWatchBookmarks"] = "true"
        if resource_version:
            query["resourceVersion"] = resource_version
        idle = idle_timeout if idle_timeout is not None else timeout_seconds + 30.0
        timeout = httpx.Timeout(self.timeout.connect, connect=self.timeout.connect, read=idle)
        what = f"WATCH {path}"
        request = self._http.build_request("GET", path, params=query, timeout=timeout)
        request.stream = OneShotBody(b"")
        try:
            response = await self._http.send(request, stream=True)
        except httpx.RequestError as exc:
            raise KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code != 200:
                with contextlib.suppress(httpx.HTTPError):
                    await response.aread()
                raise _response_error(response, what)
            stream = WatchStream(response, what)
            try:
                yield stream
            finally:
                await stream.aclose()
        finally:
            await response.aclose()

    async def watch(
        self,
        path: str,
        resource_version: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[WatchEvent]:
        """Events of one watch (see :meth:`open_watch`). An async generator: use
        ``async with contextlib.aclosing(client.watch(...)) as events``."""
        async with self.open_watch(path, resource_version, **kwargs) as stream:
            async for event in stream:
                yield event


def _clean(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _write_params(dry_run: bool, field_manager: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if dry_run:
        params["dryRun"] = "All"
    if field_manager:
        params["fieldManager"] = field_manager
    return params


def _response_error(resp: httpx.Response, what: str) -> KubeError:
    body: dict[str, Any] | None = None
    text = ""
    try:
        parsed = jsonlimit.loads_marking(resp.content)
        if isinstance(parsed, dict):
            body = parsed
    except (ValueError, httpx.ResponseNotRead):
        with contextlib.suppress(httpx.ResponseNotRead, UnicodeDecodeError):
            text = resp.text[:500]
    return error_from_status(resp.status_code, body, text, what=what)
