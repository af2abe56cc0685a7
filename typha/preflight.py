"""Checks of the operator's settings against this machine, before ``typha serve`` starts.

A port already in use, a listen host that does not resolve, an etcd endpoint that is not a URL,
a cache path that is a directory, a TLS file that is not PEM, a log file that cannot be
written: each used to end in a 20-70 line traceback (or, for a bad etcd URL, in retries
forever). Each is now one line naming the setting and its value, and exit code 2, as for an
invalid configuration value (typha/cli.py).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

from typha.config import Config


class StartupError(Exception):
    """The setting named in the message cannot work on this machine."""


def check(cfg: Config) -> None:
    """Raise StartupError for the first problem found."""
    for problem in _problems(cfg):
        raise StartupError(problem)


def _problems(cfg: Config) -> Iterator[str]:
    yield from _listeners(cfg)
    if cfg.datastore_type == "etcdv3" and not cfg.datastore_in_memory:
        yield from _etcd_endpoints(cfg)
    yield from _tls_files(cfg)
    if cfg.cache_file_path and os.path.isdir(cfg.cache_file_path):
        yield f"CacheFilePath={cfg.cache_file_path!r}: is a directory, not a file"
    if cfg.log_file_path:
        yield from _log_file(cfg.log_file_path)


def _listeners(cfg: Config) -> Iterator[str]:
    wanted = [("Server", cfg.server_host, cfg.listen_port)]
    if cfg.health_enabled:
        wanted.append(("Health", cfg.health_host, cfg.health_port))
    if cfg.prometheus_metrics_enabled:
        wanted.append(
            ("PrometheusMetrics", cfg.prometheus_metrics_host, cfg.prometheus_metrics_port)
        )
    for prefix, host, port in wanted:
        if port <= 0:
            continue  # a random port is always free
        try:
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            yield f"{prefix}Host={host!r}: cannot resolve it ({exc.strerror})"
            continue
        for family, kind, proto, _, address in infos:
            try:
                with socket.socket(family, kind, proto) as sock:
                    # As trio's listeners do: a port in TIME_WAIT is free, one listened on is not.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                what = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                yield f"{prefix}Port={port} on {address[0]}: {what}"
                break


def _etcd_endpoints(cfg: Config) -> Iterator[str]:
    if cfg.etcd_endpoints:
        name, raw_list = "EtcdEndpoints", list(cfg.etcd_endpoints)
    else:
        name, raw_list = "EtcdAddr", [f"{cfg.etcd_scheme}://{cfg.etcd_addr}"]
    for raw in raw_list:
        url = raw if "://" in raw else f"{cfg.etcd_scheme}://{raw}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            yield f"{name}={raw!r}: not an etcd URL ({exc})"
            continue
        if parts.scheme not in ("http", "https"):
            yield f"{name}={raw!r}: the scheme must be http or https"
        elif not parts.hostname:
            yield f"{name}={raw!r}: no host"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            yield f"{name}={raw!r}: not an etcd URL (expected scheme://host:port)"
        elif port == 0:
            yield f"{name}={raw!r}: port 0"


def _tls_files(cfg: Config) -> Iterator[str]:
    pairs = [
        ("ServerCertFile", cfg.server_cert_file, "ServerKeyFile", cfg.server_key_file),
        ("EtcdCertFile", cfg.etcd_cert_file, "EtcdKeyFile", cfg.etcd_key_file),
        (
            "PrometheusMetricsCertFile",
            cfg.prometheus_metrics_cert_file,
            "PrometheusMetricsKeyFile",
            cfg.prometheus_metrics_key_file,
        ),
    ]
    for cert_name, cert, key_name, key in pairs:
        if not cert or not key:
            continue
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            yield (
                f"{cert_name}={cert!r} / {key_name}={key!r}: not a PEM certificate and its "
                f"private key ({_ssl_reason(exc)})"
            )
    for name, path in (
        ("CAFile", cfg.ca_file),
        ("EtcdCaFile", cfg.etcd_ca_file),
        ("PrometheusMetricsCAFile", cfg.prometheus_metrics_ca_file),
    ):
        if not path:
            continue
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError) as exc:
            yield f"{name}={path!r}: not a PEM CA bundle ({_ssl_reason(exc)})"


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        detail = exc.args[1] if len(exc.args) > 1 else ""
        return exc.reason or str(detail).split(" (_ssl.c")[0] or "unreadable"
    return getattr(exc, "strerror", None) or str(exc)


def _log_file(path: str) -> Iterator[str]:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        yield f"LogFilePath={path!r}: cannot write it ({exc.strerror or exc})"
