"""Configuration: Typha's names and defaults, precedence, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from typha.app import etcd_settings
from typha.config import PARAMS, PARAMS_BY_KEY, ConfigError, load_config


def test_defaults_match_typha() -> None:
    cfg = load_config(environ={})
    assert cfg.datastore_type == "etcdv3"
    assert cfg.listen_port == 5473
    assert cfg.server_ping_interval_secs == 10
    assert cfg.server_pong_timeout_secs == 60
    assert cfg.server_handshake_timeout_secs == 10
    assert cfg.server_write_timeout_secs == 120
    assert cfg.max_connections_upper_limit == 10000
    assert cfg.max_connections_lower_limit == 400
    assert cfg.health_port == 9098 and cfg.prometheus_metrics_port == 9093
    assert cfg.shutdown_timeout_secs == 300
    assert cfg.k8s_service_name == "calico-typha" and cfg.k8s_namespace == "kube-system"
    assert cfg.log_file_path == "/var/log/calico/typha.log"
    assert etcd_settings(cfg).endpoints == ("http://127.0.0.1:2379",)
    assert {p.name for p in PARAMS} >= {
        "ServerMaxFallBehindSecs",
        "ServerNewClientFallBehindGracePeriod",
        "ServerMinBatchingAgeThresholdSecs",
        "SnapshotCacheMaxBatchSize",
        "ConnectionRebalancingMode",
        "ConnectionDropIntervalSecs",
        "K8sServicePollIntervalSecs",
        "K8sPortName",
        "ShutdownConnectionDropIntervalMaxSecs",
        "ClientCN",
        "ClientURISAN",
        "PrometheusMetricsClientAuth",
        "DebugMemoryProfilePath",
        "LogSeveritySys",
    }


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    cfgfile = tmp_path / "typha.cfg"
    cfgfile.write_text("[global]\nServerPingIntervalSecs = 3\nHealthPort = 9999\n")
    cfg = load_config(
        environ={"typha_serverpingintervalsecs": "5", "TYPHA_LOGFILEPATH": "none"},
        config_file=str(cfgfile),
    )
    assert cfg.server_ping_interval_secs == 5.0
    assert cfg.settings["ServerPingIntervalSecs"].source == "env:typha_serverpingintervalsecs"
    assert cfg.health_port == 9999
    assert cfg.settings["HealthPort"].source == f"file:{cfgfile}"
    assert cfg.settings["ServerWriteTimeoutSecs"].source == "default"
    assert cfg.log_file_path == ""  # "none" is the zero value


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"TYPHA_DATASTORETYPE": "consul"}, "must be one of etcdv3, kubernetes"),
        ({"TYPHA_DATASTORETYPE": "none"}, "must be one of etcdv3, kubernetes"),
        ({"TYPHA_ETCDCAFILE": "/does/not/exist"}, "does not exist"),
        ({"TYPHA_CLIENTCN": "calico-node"}, "TLS"),
        ({"TYPHA_MAXCONNECTIONSLOWERLIMIT": "20000"}, "exceeds MaxConnectionsUpperLimit"),
    ],
)
def test_bad_values_stop_the_start_with_key_value_source_and_rule(env, fragment) -> None:
    """Only die-on-fail keys, missing TLS/etcd files and inconsistent combinations stop."""
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("env", "name", "fragment"),
    [
        ({"TYPHA_SERVERPINGINTERVALSECS": "soon"}, "ServerPingIntervalSecs", "expected a number"),
        ({"TYPHA_SERVERPINGINTERVALSECS": "nan"}, "ServerPingIntervalSecs", "finite"),
        ({"TYPHA_SERVERWRITETIMEOUTSECS": "inf"}, "ServerWriteTimeoutSecs", "finite"),
        ({"TYPHA_SERVERWRITETIMEOUTSECS": "1e300"}, "ServerWriteTimeoutSecs", "at most"),
        ({"TYPHA_SERVERPINGINTERVALSECS": "0.001"}, "ServerPingIntervalSecs", "at least 0.01"),
        ({"TYPHA_HEALTHPORT": "70000"}, "HealthPort", "port number"),
        ({"TYPHA_LOGSEVERITYSCREEN": "loud"}, "LogSeverityScreen", "must be one of DEBUG"),
        ({"TYPHA_HEALTHENABLED": "maybe"}, "HealthEnabled", "expected a boolean"),
        ({"TYPHA_SERVERMAXMESSAGESIZE": "0"}, "ServerMaxMessageSize", "at least 1"),
        ({"TYPHA_SERVERMAXMESSAGESIZE": "none"}, "ServerMaxMessageSize", "at least 1"),
        ({"TYPHA_MAXCONNECTIONSUPPERLIMIT": "99999999999"}, "MaxConnectionsUpperLimit", "most"),
    ],
)
def test_other_bad_values_warn_and_use_the_default_like_typha(env, name, fragment) -> None:
    cfg = load_config(environ=env)
    assert cfg.settings[name].value == PARAMS_BY_KEY[name.lower()].default
    assert "was invalid" in cfg.settings[name].source
    (warning,) = cfg.warnings
    assert name in warning and fragment in warning and "using the default" in warning


@pytest.mark.parametrize(
    "name",
    [
        "ServerPingIntervalSecs",
        "ServerHandshakeTimeoutSecs",
        "ServerWriteTimeoutSecs",
        "ConnectionDropIntervalSecs",
        "CacheSaveIntervalSecs",
        "ShutdownTimeoutSecs",
        "ServerMaxFallBehindSecs",
    ],
)
@pytest.mark.parametrize("raw", ["none", "0", "-5"])
def test_typha_durations_at_or_below_zero_mean_the_default(name: str, raw: str) -> None:
    cfg = load_config(environ={f"TYPHA_{name.upper()}": raw})
    assert cfg.settings[name].value == PARAMS_BY_KEY[name.lower()].default > 0
    assert cfg.warnings == ()  # Typha does this quietly (an info log)
    # Positive control: a positive value is taken.
    assert load_config(environ={f"TYPHA_{name.upper()}": "7.5"}).settings[name].value == 7.5


def test_none_is_the_zero_value_where_that_is_safe() -> None:
    cfg = load_config(
        environ={
            "TYPHA_LOGFILEPATH": "none",
            "TYPHA_CONNECTIONREBALANCINGMODE": "none",
            "TYPHA_SNAPSHOTREUSESECS": "none",
            "TYPHA_SERVERPONGTIMEOUTSECS": "none",
        }
    )
    assert cfg.log_file_path == "" and cfg.connection_rebalancing_mode == "none"
    assert cfg.snapshot_reuse_secs == 0.0  # ours: 0 = never reuse a snapshot
    assert cfg.pong_timeout == 60  # Typha: a pong timeout <= 2 pings becomes 6 pings
    assert cfg.warnings == ()


def test_unknown_file_keys_are_errors_but_unknown_env_vars_are_ignored(tmp_path: Path) -> None:
    cfgfile = tmp_path / "typha.cfg"
    cfgfile.write_text("[global]\nServerPingIntervalSec = 3\n")
    with pytest.raises(ConfigError, match="unknown parameter 'ServerPingIntervalSec'"):
        load_config(environ={}, config_file=str(cfgfile))
    assert load_config(environ={"TYPHA_NOTAPARAM": "x"}).listen_port == 5473


def test_password_is_redacted_in_descriptions() -> None:
    cfg = load_config(environ={"TYPHA_ETCDPASSWORD": "hunter2"})
    rows = {name: (value, source) for name, value, source in cfg.describe()}
    assert rows["EtcdPassword"] == ("<redacted>", "env:TYPHA_ETCDPASSWORD")
    assert cfg.etcd_password == "hunter2"


def test_pong_timeout_too_close_to_ping_is_widened_like_typha() -> None:
    cfg = load_config(
        environ={"TYPHA_SERVERPINGINTERVALSECS": "10", "TYPHA_SERVERPONGTIMEOUTSECS": "15"}
    )
    assert cfg.pong_timeout == 60
    ok = load_config(
        environ={"TYPHA_SERVERPONGTIMEOUTSECS": "25", "TYPHA_SERVERPINGINTERVALSECS": "10"}
    )
    assert ok.pong_timeout == 25


def test_docs_configuration_table_is_current() -> None:
    from pathlib import Path

    from typha.config import markdown_table

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "regenerate it: python scripts/gen_docs.py"
