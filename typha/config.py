"""Typha's configuration: every parameter of Calico Typha under the same name and default
(docs/configuration.md).

Sources, lowest precedence first: defaults < config file (INI, section names ignored, default
``/etc/calico/typha.cfg``) < environment (``TYPHA_<NAME>``, case-insensitive). Empty values are
ignored; the literal ``none`` means the zero value (``TYPHA_LOGFILEPATH=none`` disables the
file log).

As in Typha, a value that does not parse or is out of range is replaced by the default with a
warning (``Config.warnings``, logged at start), and a Typha duration <= 0 (``none`` included)
means its default. Only the die-on-fail keys (``DatastoreType``), missing TLS/etcd files and
inconsistent combinations stop the start. No value can make Typha spin, flood or crash: ``nan``,
``inf`` and numbers beyond Go's duration range are refused (docs/configuration.md).
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CONFIG_FILE = "/etc/calico/typha.cfg"
ENV_PREFIX = "TYPHA_"


class ConfigError(ValueError):
    """A configuration value is invalid. The message says which, from where, and why."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str  # int, float, bool, str, choice, list, file, loglevel, port
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    local_only: bool = False  # Typha: may only come from env/file (all of ours do)
    sensitive: bool = False
    # A bad value stops the start (Typha: "die-on-fail"); any other bad value is replaced by
    # the default with a warning, as Typha does.
    die_on_fail: bool = False
    # A Typha duration: a value <= 0 (``none`` included) means "use the default", as in Typha.
    positive: bool = False


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL", "PANIC")

PARAMS: tuple[Param, ...] = (
    # Datastore
    Param(
        "DatastoreType",
        "choice",
        "etcdv3",
        "Datastore: etcdv3 or kubernetes.",
        choices=("etcdv3", "kubernetes"),
        die_on_fail=True,
    ),
    Param("EtcdAddr", "str", "127.0.0.1:2379", "etcd host:port when no endpoints list."),
    Param("EtcdScheme", "choice", "http", "etcd scheme.", choices=("http", "https")),
    Param("EtcdEndpoints", "list", [], "Comma-separated etcd URLs; overrides addr/scheme."),
    Param("EtcdKeyFile", "file", "", "etcd client key (mTLS)."),
    Param("EtcdCertFile", "file", "", "etcd client certificate (mTLS)."),
    Param("EtcdCaFile", "file", "", "CA bundle for etcd."),
    Param("EtcdUsername", "str", "", "etcd username (etcd's own authentication)."),
    Param("EtcdPassword", "str", "", "etcd password.", sensitive=True),
    Param(
        "EtcdAPI",
        "choice",
        "grpc",
        "How typha reaches etcd: its gRPC API (HTTP/2 and protobuf; the default: about half "
        "the CPU for etcd and for typha's list, docs/etcd.md) or its JSON gateway (/v3/..., "
        "over HTTP/1.1). Both take the same TLS files, https endpoints and etcd credentials.",
        choices=("grpc", "gateway"),
    ),
    Param(
        "EtcdHangDetectionSecs",
        "float",
        30.0,
        "An etcd that stops answering (hung, black-holed) is noticed within this time: "
        "a one-key read every third of it, each allowed two thirds of it.",
        minimum=0.3,
        positive=True,
    ),
    # Server
    Param("ServerPort", "port", 5473, "Listen port (0 means 5473; -1 a random port)."),
    Param("ServerHost", "str", "", "Listen address (empty: all)."),
    Param(
        "ServerMaxMessageSize", "int", 100, "Max KVs per message when batching deltas.", minimum=1
    ),
    Param(
        "ServerMaxFallBehindSecs",
        "float",
        300.0,
        "History kept for resumes; older clients get a conflated catch-up.",
        minimum=1,
        positive=True,
    ),
    Param(
        "ServerNewClientFallBehindGracePeriod",
        "float",
        300.0,
        "After its snapshot, a new client's position stays in the history however old it "
        "gets (ServerMaxFallBehindSecs does not apply; HistoryMaxUpdates still does) for this "
        "long, or until it first catches up.",
        minimum=0,
        positive=True,
    ),
    Param(
        "ServerMinBatchingAgeThresholdSecs",
        "float",
        0.01,
        "Breadcrumb age below which a client counts as caught up.",
        minimum=0,
        positive=True,
    ),
    Param("ServerPingIntervalSecs", "float", 10.0, "Ping period.", minimum=0.01, positive=True),
    Param(
        "ServerPongTimeoutSecs",
        "float",
        60.0,
        "Drop a client with no pong for this long.",
        minimum=0,
    ),
    Param(
        "ServerHandshakeTimeoutSecs",
        "float",
        10.0,
        "Time allowed for the client hello.",
        minimum=0.01,
        positive=True,
    ),
    Param(
        "ServerWriteTimeoutSecs",
        "float",
        120.0,
        "Drop a client whose writes stall this long.",
        minimum=0.01,
        positive=True,
    ),
    Param("SnapshotCacheMaxBatchSize", "int", 100, "Max updates per breadcrumb.", minimum=1),
    # Connection limits, rebalancing, shutdown
    Param("MaxConnectionsUpperLimit", "int", 10000, "Hard connection cap.", minimum=1),
    Param(
        "MaxConnectionsLowerLimit",
        "int",
        400,
        "Floor for the computed per-replica limit.",
        minimum=1,
    ),
    Param(
        "ConnectionRebalancingMode",
        "choice",
        "none",
        "none or kubernetes.",
        choices=("none", "kubernetes"),
    ),
    Param(
        "ConnectionDropIntervalSecs", "float", 1.0, "Governor tick.", minimum=0.01, positive=True
    ),
    Param(
        "K8sServicePollIntervalSecs",
        "float",
        30.0,
        "Rebalancing poll period.",
        minimum=0.1,
        positive=True,
    ),
    Param("K8sNamespace", "str", "kube-system", "Namespace of the Typha service."),
    Param("K8sServiceName", "str", "calico-typha", "Service whose endpoints are counted."),
    Param("K8sPortName", "str", "calico-typha", "Port name that marks Typha's endpoints."),
    Param(
        "ShutdownTimeoutSecs", "float", 300.0, "Graceful drain budget.", minimum=0, positive=True
    ),
    Param(
        "ShutdownConnectionDropIntervalMaxSecs",
        "float",
        1.0,
        "Cap on the gap between drops while draining.",
        minimum=0.001,
        positive=True,
    ),
    # TLS
    Param("ServerCertFile", "file", "", "Server certificate."),
    Param("ServerKeyFile", "file", "", "Server key."),
    Param("CAFile", "file", "", "CA bundle used to verify client certificates."),
    Param("ClientCN", "str", "", "Required client certificate Common Name."),
    Param("ClientURISAN", "str", "", "Required client certificate URI SAN."),
    # Health, metrics, debug, logging
    Param("HealthEnabled", "bool", False, "Serve /liveness and /readiness."),
    Param("HealthHost", "str", "localhost", "Health bind address."),
    Param("HealthPort", "port", 9098, "Health port."),
    Param("PrometheusMetricsEnabled", "bool", False, "Serve /metrics."),
    Param("PrometheusMetricsHost", "str", "", "Metrics bind address."),
    Param("PrometheusMetricsPort", "port", 9093, "Metrics port."),
    Param(
        "PrometheusGoMetricsEnabled",
        "bool",
        True,
        "Include the runtime's (here: Python's GC and platform) collectors.",
    ),
    Param("PrometheusProcessMetricsEnabled", "bool", True, "Include process collectors."),
    Param("PrometheusMetricsCertFile", "file", "", "Metrics HTTPS certificate."),
    Param("PrometheusMetricsKeyFile", "file", "", "Metrics HTTPS key."),
    Param("PrometheusMetricsCAFile", "file", "", "CA for metrics client certificates."),
    Param(
        "PrometheusMetricsClientAuth",
        "choice",
        "NoClientCert",
        "Metrics client auth.",
        choices=(
            "NoClientCert",
            "RequireAndVerifyClientCert",
            "RequireAnyClientCert",
            "VerifyClientCertIfGiven",
        ),
    ),
    Param("DebugPort", "int", 0, "Debug server port (0: off).", minimum=0),
    Param("DebugHost", "str", "localhost", "Debug server address."),
    Param("DebugMemoryProfilePath", "str", "", "SIGUSR1 memory profile target."),
    Param("DebugDisableLogDropping", "bool", False, "Block instead of dropping logs."),
    Param(
        "LogFilePath",
        "str",
        "/var/log/calico/typha.log",
        "Log file; none disables.",
        die_on_fail=True,
    ),
    Param("LogSeverityFile", "loglevel", "INFO", "Minimum severity to the file."),
    Param("LogSeverityScreen", "loglevel", "INFO", "Minimum severity to stdout."),
    Param("LogSeveritySys", "loglevel", "INFO", "Minimum severity to syslog; none disables."),
    # Our own (not in Typha): documented in docs/configuration.md
    Param("LogFormat", "choice", "console", "console or json.", choices=("console", "json")),
    Param(
        "ServerFanoutIntervalSecs",
        "float",
        0.005,
        "Coalescing window of the shared fan-out (latency vs. CPU).",
        minimum=0,
    ),
    Param(
        "SnapshotReuseSecs",
        "float",
        10.0,
        "How long a built snapshot serves later joiners once something has changed since it"
        " (an unchanged one serves them whatever its age).",
        minimum=0,
    ),
    Param(
        "TombstoneRetentionSecs",
        "float",
        3600.0,
        "How long deletions are remembered for conflated catch-ups.",
        minimum=0,
    ),
    Param(
        "CatchUpMaxShare",
        "float",
        0.5,
        "A resume whose conflated catch-up would carry more than this share of the state "
        "(and over 1,000 keys) gets the shared snapshot instead.",
        minimum=0,
    ),
    Param(
        "HistoryMaxUpdates", "int", 200000, "Max updates kept in the breadcrumb history.", minimum=1
    ),
    Param(
        "RedirectAddrs",
        "list",
        [],
        "Other replicas' host:port, suggested to clients in Goodbye messages.",
    ),
    Param("CacheFilePath", "str", "", "Warm-restart cache file (empty: disabled)."),
    Param(
        "CacheSaveIntervalSecs",
        "float",
        30.0,
        "Period of warm-restart saves.",
        minimum=1,
        positive=True,
    ),
    Param(
        "DatastoreInMemory",
        "bool",
        False,
        "Use the in-memory datastore (demo and tests only; not a DatastoreType).",
    ),
)

PARAMS_BY_KEY: dict[str, Param] = {p.name.lower(): p for p in PARAMS}

_NO_DEBUG_SERVER = "there is no debug server (Go Typha's pprof endpoint has no counterpart here)."

# Parameters accepted because Calico Typha has them, but which change nothing here. Setting one
# logs a warning at start naming it and this reason; the generated table in
# docs/configuration.md says so too. Every other parameter has an effect, and a test names the
# test that shows it (tests/test_settings_coverage.py).
NO_EFFECT: dict[str, str] = {
    "ServerMinBatchingAgeThresholdSecs": (
        "Typha merges the deltas of several breadcrumbs into one message, per client, once "
        "that client's next breadcrumb is older than this. Here each breadcrumb is encoded "
        "once and its bytes are shared by all clients; a client that is behind gets many "
        "breadcrumbs' messages in one write instead, so there is no per-client batching to tune."
    ),
    "DebugPort": _NO_DEBUG_SERVER,
    "DebugHost": _NO_DEBUG_SERVER,
    "DebugMemoryProfilePath": (
        "there is no heap profile on SIGUSR1 (Go Typha writes a Go heap profile there)."
    ),
}


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("_")
        out.append(ch.lower())
    return "".join(out).replace("k8s_", "k8s_")


ATTR_FOR: dict[str, str] = {p.name: _snake(p.name) for p in PARAMS}
NAME_FOR_ATTR: dict[str, str] = {attr: name for name, attr in ATTR_FOR.items()}


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "y", "t", "on"):
        return True
    if low in ("false", "0", "no", "n", "f", "off"):
        return False
    raise ValueError("expected a boolean (true/false)")


# Go's time.Duration ends at 2**63 ns; Typha turns anything beyond (inf and nan included) into
# a negative duration and hence the default. We refuse such values outright.
MAX_SECONDS = (2**63 - 1) / 1e9
MAX_INT = 2**31 - 1  # Typha parses ints as 32-bit


def _parse_number(kind: Callable[[str], Any], p: Param) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise ValueError("expected a finite number")
        if kind is float and value > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds")
        if kind is int and value > MAX_INT:
            raise ValueError(f"must be at most {MAX_INT}")
        if p.positive and value <= 0:
            raise NotPositive()
        if p.minimum is not None and value < p.minimum:
            raise ValueError(f"must be at least {p.minimum:g}")
        return value

    return parse


class NotPositive(ValueError):
    """A Typha duration <= 0: Typha quietly uses the default (not a mistake worth a warning)."""

    def __init__(self) -> None:
        super().__init__("<= 0 means the default")


def zero_value(p: Param) -> Any:
    """What ``none`` means for ``p`` (Typha: the type's zero value)."""
    if p.kind == "choice" and "none" in p.choices:
        return "none"
    return {"int": 0, "float": 0.0, "bool": False, "list": [], "port": 0}.get(p.kind, "")


def parse_value(p: Param, raw: str) -> Any:
    """Parse one raw string for a parameter; raises ValueError saying what is allowed."""
    if raw.strip().lower() == "none":
        value = zero_value(p)
        if p.kind in ("int", "float"):
            # The zero value goes through the same bounds as any number.
            return _parse_number(float if p.kind == "float" else int, p)(str(value))
        if p.kind == "choice" and value not in p.choices:
            raise ValueError(f"must be one of {', '.join(p.choices)}")
        return value
    match p.kind:
        case "int":
            return _parse_number(int, p)(raw)
        case "float":
            return _parse_number(float, p)(raw)
        case "bool":
            return _parse_bool(raw)
        case "str":
            return raw.strip()
        case "list":
            return [x.strip() for x in raw.split(",") if x.strip()]
        case "choice":
            for choice in p.choices:
                if raw.strip().lower() == choice.lower():
                    return choice
            raise ValueError(f"must be one of {', '.join(p.choices)}")
        case "loglevel":
            level = raw.strip().upper()
            if level == "WARN":
                level = "WARNING"
            if level not in LOG_LEVELS:
                raise ValueError(f"must be one of {', '.join(LOG_LEVELS[:5])}")
            return {"FATAL": "CRITICAL", "PANIC": "CRITICAL"}.get(level, level)
        case "port":
            try:
                port = int(raw.strip())
            except ValueError:
                raise ValueError("expected a port number") from None
            if not -1 <= port <= 65535:
                raise ValueError("must be a port number 0-65535 (-1: random)")
            return port
        case "file":
            path = raw.strip()
            if path and not os.path.exists(path):
                raise ValueError(f"file {path} does not exist")
            return path
    raise AssertionError(p.kind)


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    source: str  # "default", "file:/etc/calico/typha.cfg", "env:TYPHA_X"


@dataclass(frozen=True)
class Config:
    """Effective configuration: every parameter's value and where it came from (``settings``).

    Read a value by its snake_case name (``cfg.server_ping_interval_secs``) or its parameter
    name (``cfg.value("ServerPingIntervalSecs")``). The running components (server, cache,
    datastores, rebalancer, HTTP endpoints) never see this object: ``app.py`` builds each one
    its own typed settings from it. Start-up code reads it directly (``preflight.py``,
    ``logs.py``, ``cli.py``, ``writer.py``)."""

    settings: Mapping[str, Setting]
    warnings: tuple[str, ...] = ()

    def __getattr__(self, attr: str) -> Any:
        # Only called for names that are not real attributes: the parameters' snake_case names.
        name = NAME_FOR_ATTR.get(attr)
        if name is None:
            raise AttributeError(f"Config has no parameter {attr!r}")
        return self.settings[name].value

    def value(self, name: str) -> Any:
        return self.settings[name].value

    def is_set(self, name: str) -> bool:
        """True when the file, the environment or an override gave a value (even one that
        was then replaced by the default)."""
        return self.settings[name].source != "default"

    def replace(self, **changes: Any) -> Config:
        new = dict(self.settings)
        for attr, value in changes.items():
            new[NAME_FOR_ATTR[attr]] = Setting(value, "override")
        return Config(new, self.warnings)

    # Derived values -----------------------------------------------------------------------------

    @property
    def listen_port(self) -> int:
        port = self.value("ServerPort")
        return 5473 if port == 0 else (0 if port == -1 else port)

    @property
    def pong_timeout(self) -> float:
        # Typha: a pong timeout of at most twice the ping interval is reset to six intervals.
        ping = self.value("ServerPingIntervalSecs")
        pong = self.value("ServerPongTimeoutSecs")
        return pong if pong > 2 * ping else 6 * ping

    @property
    def tls_enabled(self) -> bool:
        names = ("ServerCertFile", "ServerKeyFile", "CAFile", "ClientCN", "ClientURISAN")
        return any(self.value(n) for n in names)

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, value, source) rows with sensitive values redacted."""
        rows = []
        for p in PARAMS:
            s = self.settings[p.name]
            value = "<redacted>" if p.sensitive and s.value else _show(s.value)
            rows.append((p.name, value, s.source))
        return rows


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def load_config(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config. Raises ConfigError on any bad value or unknown file key."""
    environ = os.environ if environ is None else environ
    settings = {p.name: Setting(p.default, "default") for p in PARAMS}
    warnings: list[str] = []

    path = config_file or environ.get("TYPHA_CONFIGFILE") or DEFAULT_CONFIG_FILE
    explicit = config_file is not None or "TYPHA_CONFIGFILE" in environ
    if os.path.exists(path):
        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for section in parser.sections():
            for key, raw in parser.items(section):
                _set(settings, warnings, key, raw, f"file:{path}", strict=True)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")

    for env_key, raw in environ.items():
        if env_key.upper().startswith(ENV_PREFIX) and env_key.upper() != "TYPHA_CONFIGFILE":
            _set(
                settings, warnings, env_key[len(ENV_PREFIX) :], raw, f"env:{env_key}", strict=False
            )

    for name, value in (overrides or {}).items():
        _set(settings, warnings, name, str(value), "override", strict=True)

    cfg = Config(settings, tuple(warnings))
    _validate(cfg)
    return cfg


def _set(
    settings: dict[str, Setting],
    warnings: list[str],
    key: str,
    raw: str,
    source: str,
    *,
    strict: bool,
) -> None:
    p = PARAMS_BY_KEY.get(key.lower())
    if p is None:
        if strict:
            raise ConfigError(f"{source}: unknown parameter {key!r}")
        return  # Unknown TYPHA_* env vars are ignored, as Typha does.
    if raw.strip() == "":
        return
    try:
        value = parse_value(p, raw)
    except NotPositive:
        # Typha's rule for durations: <= 0 (or none) means the default. Recorded as such.
        settings[p.name] = Setting(p.default, f"default ({source}={raw.strip()!r} is <= 0)")
        return
    except ValueError as exc:
        shown = "<redacted>" if p.sensitive else repr(raw)
        message = f"{p.name}={shown} (from {source}): {exc}"
        # Programmatic overrides are the caller's mistake; a missing TLS/etcd file would
        # silently turn security off: those stop the start, as the die-on-fail keys do.
        if p.die_on_fail or p.kind == "file" or source == "override":
            raise ConfigError(message) from None
        warnings.append(f"{message}; using the default {_show(p.default) or '(empty)'}")
        settings[p.name] = Setting(p.default, f"default ({source} was invalid)")
        return
    settings[p.name] = Setting(value, source)


def _validate(cfg: Config) -> None:
    s = cfg.settings
    if cfg.tls_enabled:
        missing = [n for n in ("ServerCertFile", "ServerKeyFile", "CAFile") if not s[n].value]
        if missing or not (s["ClientCN"].value or s["ClientURISAN"].value):
            raise ConfigError(
                "TLS: when any of ServerCertFile, ServerKeyFile, CAFile, ClientCN, ClientURISAN "
                "is set, ServerCertFile, ServerKeyFile, CAFile and at least one of ClientCN / "
                f"ClientURISAN are required (missing: {', '.join(missing) or 'ClientCN/URISAN'})"
            )
    lower = s["MaxConnectionsLowerLimit"].value
    upper = s["MaxConnectionsUpperLimit"].value
    if lower > upper:
        raise ConfigError(
            f"MaxConnectionsLowerLimit={lower} ({s['MaxConnectionsLowerLimit'].source}) exceeds "
            f"MaxConnectionsUpperLimit={upper} ({s['MaxConnectionsUpperLimit'].source})"
        )
    etcd_tls = [s[n].value for n in ("EtcdCertFile", "EtcdKeyFile")]
    if any(etcd_tls) and not all(etcd_tls):
        raise ConfigError("EtcdCertFile and EtcdKeyFile must be set together")


def no_effect_settings(cfg: Config) -> list[tuple[str, str]]:
    """(name, reason) of every parameter in ``NO_EFFECT`` that the operator set."""
    return [(name, reason) for name, reason in NO_EFFECT.items() if cfg.is_set(name)]


def markdown_table() -> str:
    """The parameter table of docs/configuration.md (a test keeps the doc in sync)."""
    rows = ["| parameter | env var | default | meaning |", "|---|---|---|---|"]
    for p in PARAMS:
        default = _show(p.default) if p.default not in ("", []) else "-"
        meaning = f"{p.help} One of: {', '.join(p.choices)}." if p.choices else p.help
        if p.name in NO_EFFECT:
            meaning += f" **No effect here:** {NO_EFFECT[p.name]}"
        rows.append(f"| `{p.name}` | `TYPHA_{p.name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"
