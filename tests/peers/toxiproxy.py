"""Shopify toxiproxy v2 server (built by scripts/build-peers.sh) plus a small httpx client.

Fault tests put a toxiproxy proxy between the code under test and a real peer (etcd, the
apiserver, typha itself) and add latency, bandwidth limits, timeouts or resets.

Why our own client rather than `toxiproxy-python` 0.1.1: that package does drive the v2 server
(create/toxics/enable/disable/reset all work), but it keeps the server address in class attributes
shared process-wide (`APIConsumer.host/port`), ignores 5xx replies, enables proxies with the
deprecated `POST /proxies/{name}` (the server logs a warning; v2 wants PATCH) and drags in
`requests` + `future`.  See docs/peers.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.peers.ports import LOOPBACK, free_port, port_is_open
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client


def find_toxiproxy() -> str | None:
    """$TYPHA_TOXIPROXY_BIN, else the build-peers cache, else toxiproxy-server on PATH."""
    return find_binary("TYPHA_TOXIPROXY_BIN", "toxiproxy-server", "toxiproxy-server")


@dataclass(frozen=True)
class Proxy:
    """A proxy as the server reports it; `listen` is host:port with the real port."""

    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class ToxiproxyClient:
    """Minimal client for the toxiproxy v2 REST API (one instance per server)."""

    def __init__(self, api_url: str, timeout: float = 10.0):
        self.api_url = api_url
        self._http = loopback_client(base_url=api_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ToxiproxyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        r = self._http.request(method, path, json=json)
        if not r.is_success:
            raise PeerError(f"toxiproxy {method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    @staticmethod
    def _proxy(data: dict[str, Any]) -> Proxy:
        return Proxy(data["name"], data["listen"], data["upstream"], bool(data["enabled"]))

    def version(self) -> str:
        data = self._call("GET", "/version")
        return str(data["version"]) if isinstance(data, dict) else str(data)

    def create_proxy(
        self, name: str, upstream: str, listen: str | None = None, enabled: bool = True
    ) -> Proxy:
        """Create a proxy; `listen` defaults to a kernel-chosen loopback port."""
        body = {
            "name": name,
            "upstream": upstream,
            "listen": listen or f"{LOOPBACK}:0",
            "enabled": enabled,
        }
        return self._proxy(self._call("POST", "/proxies", body))

    def get_proxy(self, name: str) -> Proxy:
        return self._proxy(self._call("GET", f"/proxies/{name}"))

    def proxies(self) -> dict[str, Proxy]:
        return {k: self._proxy(v) for k, v in self._call("GET", "/proxies").items()}

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def set_enabled(self, name: str, enabled: bool) -> Proxy:
        """Disable = close all connections and stop listening; enable = listen again."""
        return self._proxy(self._call("PATCH", f"/proxies/{name}", {"enabled": enabled}))

    @contextmanager
    def down(self, name: str) -> Iterator[None]:
        """Take a proxy down for the duration of the block."""
        self.set_enabled(name, False)
        try:
            yield
        finally:
            self.set_enabled(name, True)

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: Any,
    ) -> dict[str, Any]:
        """Add a toxic, e.g. add_toxic("etcd", "latency", latency=200, jitter=0).

        Types: latency, bandwidth (rate KB/s), slow_close, timeout, reset_peer, slicer,
        limit_data.  `stream` is "downstream" (server->client) or "upstream".
        """
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        result: dict[str, Any] = self._call("POST", f"/proxies/{proxy}/toxics", body)
        return result

    def update_toxic(self, proxy: str, toxic: str, **attributes: Any) -> dict[str, Any]:
        body = {"attributes": attributes}
        result: dict[str, Any] = self._call("PATCH", f"/proxies/{proxy}/toxics/{toxic}", body)
        return result

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/proxies/{proxy}/toxics")
        return result

    def reset(self) -> None:
        """Enable all proxies and remove all toxics (proxies stay)."""
        self._call("POST", "/reset")

    def delete_all(self) -> None:
        for name in self.proxies():
            self.delete_proxy(name)


class ToxiproxyServer(PeerProcess):
    """toxiproxy-server on a random loopback API port; `client` is ready after start()."""

    name = "toxiproxy"
    startup_timeout = 15.0

    def __init__(self, *, binary: str | None = None, startup_timeout: float | None = None):
        super().__init__(startup_timeout=startup_timeout)
        found = binary or find_toxiproxy()
        if not found:
            raise PeerError(
                "no toxiproxy-server binary: run scripts/build-peers.sh toxiproxy "
                "or set TYPHA_TOXIPROXY_BIN"
            )
        self.binary = found
        self.port = free_port()
        self._client: ToxiproxyClient | None = None

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def client(self) -> ToxiproxyClient:
        """A client bound to this server (closed when the server stops)."""
        if self._client is None:
            self._client = ToxiproxyClient(self.api_url)
        return self._client

    def _command(self) -> list[str]:
        return [self.binary, "-host", LOOPBACK, "-port", str(self.port)]

    def _is_healthy(self) -> bool:
        with loopback_client(timeout=2.0) as c:
            return c.get(f"{self.api_url}/version").status_code == 200

    def _on_stopped(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # Convenience pass-throughs so tests can write toxiproxy_server.create_proxy(...).

    def create_proxy(self, name: str, upstream: str, listen: str | None = None) -> Proxy:
        return self.client.create_proxy(name, upstream, listen)

    def add_toxic(self, proxy: str, type: str, **kwargs: Any) -> dict[str, Any]:
        return self.client.add_toxic(proxy, type, **kwargs)

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self.client.remove_toxic(proxy, toxic)

    def reset(self) -> None:
        self.client.reset()

    def wait_listening(self, proxy: Proxy, timeout: float = 5.0) -> None:
        """Wait until a proxy's listener accepts (it is up as soon as create returns, but
        an enable after `down()` is asynchronous)."""
        deadline = time.monotonic() + timeout
        while not port_is_open(proxy.host, proxy.port):
            if time.monotonic() > deadline:
                raise PeerError(f"proxy {proxy.name} not listening on {proxy.listen}")
            time.sleep(0.02)
