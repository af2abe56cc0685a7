"""Every parameter has an effect, shown by a test, or says it has none (``NO_EFFECT``): no
entry of ``PARAMS`` may be in neither list, nor in both."""

from __future__ import annotations

import ast
from pathlib import Path

from typha.config import NO_EFFECT, PARAMS

ROOT = Path(__file__).resolve().parent.parent

# Parameter -> the test that shows what it changes.
_EFFECTS = "tests/test_settings_effects.py"
_CLI = "tests/test_cli.py"
_ETCD = "tests/sync/test_etcd_datastore.py"
_TLS = "tests/test_tls.py"
_METRICS_TLS = (
    "tests/test_metrics_bounded.py::"
    "test_metrics_over_tls_with_client_certificates_and_an_idle_client"
)
_REBALANCE = (
    "tests/test_k8s_rebalance.py::test_two_typhas_rebalance_as_replicas_and_client_waves_arrive"
)
BEHAVIOUR_TESTS: dict[str, str] = {
    "DatastoreType": (
        f"{_EFFECTS}::test_datastore_type_chooses_the_datastore_and_the_gob_resource_versions"
    ),
    "EtcdAddr": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdScheme": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdEndpoints": f"{_ETCD}::test_settings_endpoints",
    "EtcdKeyFile": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdCertFile": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdCaFile": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdUsername": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdPassword": f"{_ETCD}::test_tls_and_password_auth_from_config",
    "EtcdAPI": "tests/test_etcd_grpc_e2e.py::test_typha_serves_a_client_through_the_grpc_watch",
    "EtcdHangDetectionSecs": (
        "tests/faults/test_etcd_hang.py::test_the_setting_reaches_the_datastore"
    ),
    "ServerPort": f"{_CLI}::test_operator_mistakes_give_one_line_and_exit_code_2",
    "ServerHost": f"{_CLI}::test_operator_mistakes_give_one_line_and_exit_code_2",
    "ServerMaxMessageSize": f"{_EFFECTS}::test_server_max_message_size_splits_gob_deltas",
    "ServerMaxFallBehindSecs": (
        f"{_EFFECTS}::test_server_max_fall_behind_secs_bounds_the_history_by_age"
    ),
    "ServerNewClientFallBehindGracePeriod": (
        "tests/server/test_grace_period.py::"
        "test_a_slow_new_client_keeps_its_place_for_the_grace_period"
    ),
    "ServerPingIntervalSecs": (
        "tests/server/test_core_integration.py::test_pong_timeout_drops_only_the_silent_client"
    ),
    "ServerPongTimeoutSecs": (
        "tests/server/test_core_integration.py::test_pong_timeout_drops_only_the_silent_client"
    ),
    "ServerHandshakeTimeoutSecs": (
        "tests/server/test_hostile_clients.py::test_slowloris_handshake_is_cut_at_the_handshake_timeout"
    ),
    "ServerWriteTimeoutSecs": (
        "tests/server/test_hostile_clients.py::"
        "test_client_that_never_reads_is_dropped_by_the_write_timeout"
    ),
    "SnapshotCacheMaxBatchSize": (
        f"{_EFFECTS}::test_snapshot_cache_max_batch_size_splits_breadcrumbs"
    ),
    "MaxConnectionsUpperLimit": (
        "tests/server/test_hostile_clients.py::test_connection_flood_past_the_limit"
    ),
    "MaxConnectionsLowerLimit": _REBALANCE,
    "ConnectionRebalancingMode": (
        "tests/test_k8s_rebalance.py::test_lookup_errors_mean_the_upper_limit"
    ),
    "ConnectionDropIntervalSecs": (
        "tests/server/test_replicas.py::"
        "test_connection_limit_sheds_excess_with_goodbye_suggesting_other_replica"
    ),
    "K8sServicePollIntervalSecs": _REBALANCE,
    "K8sNamespace": _REBALANCE,
    "K8sServiceName": _REBALANCE,
    "K8sPortName": _REBALANCE,
    "ShutdownTimeoutSecs": (
        "tests/server/test_core_integration.py::test_drain_says_goodbye_to_everyone_spread_over_time"
    ),
    "ShutdownConnectionDropIntervalMaxSecs": (
        f"{_EFFECTS}::test_shutdown_drop_interval_max_caps_the_gap_between_drops"
    ),
    "ServerCertFile": f"{_TLS}::test_right_cn_is_served_and_wrong_cn_and_plaintext_are_refused",
    "ServerKeyFile": f"{_TLS}::test_right_cn_is_served_and_wrong_cn_and_plaintext_are_refused",
    "CAFile": f"{_TLS}::test_right_cn_is_served_and_wrong_cn_and_plaintext_are_refused",
    "ClientCN": f"{_TLS}::test_right_cn_is_served_and_wrong_cn_and_plaintext_are_refused",
    "ClientURISAN": f"{_TLS}::test_uri_san_is_served_and_other_uri_refused",
    "HealthEnabled": f"{_CLI}::test_sigterm_drains_clients_with_goodbyes",
    "HealthHost": f"{_CLI}::test_sigterm_drains_clients_with_goodbyes",
    "HealthPort": f"{_CLI}::test_operator_mistakes_give_one_line_and_exit_code_2",
    "PrometheusMetricsEnabled": (
        "tests/test_metrics_prometheus.py::test_prometheus_scrapes_typha_metrics"
    ),
    "PrometheusMetricsHost": (
        "tests/test_metrics_prometheus.py::test_prometheus_scrapes_typha_metrics"
    ),
    "PrometheusMetricsPort": (
        "tests/test_metrics_prometheus.py::test_prometheus_scrapes_typha_metrics"
    ),
    "PrometheusGoMetricsEnabled": (
        f"{_EFFECTS}::test_prometheus_runtime_and_process_collectors_can_be_turned_off"
    ),
    "PrometheusProcessMetricsEnabled": (
        f"{_EFFECTS}::test_prometheus_runtime_and_process_collectors_can_be_turned_off"
    ),
    "PrometheusMetricsCertFile": _METRICS_TLS,
    "PrometheusMetricsKeyFile": _METRICS_TLS,
    "PrometheusMetricsCAFile": _METRICS_TLS,
    "PrometheusMetricsClientAuth": _METRICS_TLS,
    "DebugDisableLogDropping": (
        f"{_EFFECTS}::test_debug_disable_log_dropping_blocks_instead_of_dropping"
    ),
    "LogFilePath": "tests/test_logs.py::test_json_file_log_with_connection_context",
    "LogSeverityFile": "tests/test_logs.py::test_json_file_log_with_connection_context",
    "LogSeverityScreen": "tests/test_logs.py::test_json_file_log_with_connection_context",
    "LogSeveritySys": "tests/test_logs.py::test_json_file_log_with_connection_context",
    "LogFormat": "tests/test_logs.py::test_json_file_log_with_connection_context",
    "ServerFanoutIntervalSecs": (
        f"{_EFFECTS}::test_fanout_interval_coalesces_a_burst_into_one_write"
    ),
    "CatchUpMaxShare": (
        "tests/server/test_catchup_amplification.py::"
        "test_catch_up_max_share_sets_the_largest_catch_up_a_resume_gets"
    ),
    "SnapshotReuseSecs": "tests/faults/test_mass_reconnect.py::test_1000_clients_reconnect_at_once",
    "TombstoneRetentionSecs": (
        f"{_EFFECTS}::test_tombstone_retention_secs_bounds_how_long_deletions_are_remembered"
    ),
    "HistoryMaxUpdates": (
        "tests/server/test_core_integration.py::test_stalled_client_catches_up_by_conflation"
    ),
    "RedirectAddrs": (
        "tests/server/test_core_integration.py::test_drain_says_goodbye_to_everyone_spread_over_time"
    ),
    "CacheFilePath": (
        "tests/cache/test_warm_restart.py::test_restart_resumes_clients_without_snapshots"
    ),
    "CacheSaveIntervalSecs": (
        "tests/cache/test_warm_restart.py::"
        "test_sigterm_during_a_periodic_save_still_drains_and_ends_with_a_clean_save"
    ),
    "DatastoreInMemory": f"{_CLI}::test_sigterm_drains_clients_with_goodbyes",
}


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_parameter_has_a_behaviour_test_or_says_it_has_no_effect() -> None:
    names = {p.name for p in PARAMS}
    neither = sorted(names - BEHAVIOUR_TESTS.keys() - NO_EFFECT.keys())
    both = sorted(BEHAVIOUR_TESTS.keys() & NO_EFFECT.keys())
    unknown = sorted((BEHAVIOUR_TESTS.keys() | NO_EFFECT.keys()) - names)
    assert not neither, f"no behaviour test and not in NO_EFFECT: {neither}"
    assert not both, f"both tested and declared without effect: {both}"
    assert not unknown, f"not parameters: {unknown}"


def test_each_named_behaviour_test_exists() -> None:
    missing = []
    for name, node_id in BEHAVIOUR_TESTS.items():
        assert isinstance(node_id, str), name
        path, func = node_id.split("::")
        file = ROOT / path
        if not file.exists() or func not in _test_functions(file):
            missing.append(f"{name}: {node_id}")
    assert not missing, missing


def test_the_walk_catches_a_parameter_in_neither_list() -> None:
    # Positive control for the check above: dropping one entry must be noticed.
    names = {p.name for p in PARAMS}
    partial = dict(BEHAVIOUR_TESTS)
    del partial["ServerPort"]
    assert names - partial.keys() - NO_EFFECT.keys() == {"ServerPort"}
    assert "test_each_named_behaviour_test_exists" in _test_functions(Path(__file__))
    assert "no_such_test" not in _test_functions(Path(__file__))
