"""The node client's per-key and per-policy guards: deep values and unexpected exceptions cost
one key (or one policy's rules), never the agent.

Values reach the node client through msgpack, which refuses nesting beyond 1,024 levels
(tests/test_hostile_values.py); 1,000 levels still arrive, and ``repr``/``str`` of such a value
raise ``RecursionError``. The parsers now never stringify a container, and *any* exception
while parsing or calculating one key is contained.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import felix_client.calc.engine as engine_module
from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.model.keys import Kind
from felix_client.calc.model.updates import parse_error, parse_update
from tests.calc.test_model import GOOD_WEP
from typha.model import keys

POLICY = keys.policy_key("GlobalNetworkPolicy", "", "p")
WEP = keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0")


def deep(depth: int = 1000) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


class Surprise(Exception):
    """An exception type no parser raises."""


class Booby(Mapping[str, Any]):
    """A value whose every lookup raises an exception type nobody expects."""

    def __getitem__(self, key: str) -> Any:
        raise Surprise(key)

    def __iter__(self) -> Iterator[str]:
        raise Surprise("iter")

    def __len__(self) -> int:
        return 1


def good_policy(**rule: Any) -> dict[str, Any]:
    return {
        "selector": "all()",
        "order": 10,
        "inbound_rules": [{"action": "allow", "protocol": "TCP", "dst_ports": [80], **rule}],
        "types": ["Ingress"],
    }


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        (POLICY, good_policy(protocol=deep())),
        (POLICY, good_policy(dst_ports=[deep()])),
        (POLICY, {**good_policy(), "order": deep()}),
        (POLICY, {**good_policy(), "selector": deep()}),
        (POLICY, good_policy(src_nets=[deep()])),
        (WEP, {**GOOD_WEP, "labels": {"app": deep()}}),
        (WEP, {**GOOD_WEP, "ports": [{"name": "h", "protocol": deep(), "port": 80}]}),
        (keys.global_config_key("LogSeverityScreen"), deep()),
        (keys.ip_pool_key("10.0.0.0/16"), {"cidr": "10.0.0.0/16", "ipipMode": deep()}),
        (POLICY, Booby()),
        (WEP, {**GOOD_WEP, "labels": Booby()}),
    ],
)
def test_deep_or_booby_trapped_values_are_deletions(key: str, bad: Any) -> None:
    result = parse_update(key, bad)
    assert result.value is None and result.kind is not Kind.IGNORED
    reason = parse_error(key, bad)
    assert reason and len(reason) <= 300


def test_positive_controls_parse() -> None:
    assert parse_update(POLICY, good_policy()).value is not None
    assert parse_update(WEP, GOOD_WEP).value is not None
    assert parse_update(keys.global_config_key("LogSeverityScreen"), "Info").value == "Info"
    assert parse_error(POLICY, good_policy()) is None


def _policy_rendered(files: dict[str, str], name: str) -> bool:
    return any(name in line for line in files["iptables-filter"].splitlines())


def test_engine_contains_a_bad_key_and_keeps_the_rest() -> None:
    engine = CalcEngine("n1")
    other = keys.workload_endpoint_key("n1", "k8s", "ns/q", "eth0")
    engine.apply_updates(
        [
            (POLICY, good_policy()),
            (WEP, {**GOOD_WEP, "name": "cali1"}),
            (other, {**GOOD_WEP, "name": "cali2", "ipv4_nets": ["10.0.1.6/32"]}),
        ]
    )
    engine.snapshot_done()
    engine.flush()
    files = render_files(engine.state())
    assert "cali1" in files["iptables-filter"] and "cali2" in files["iptables-filter"]
    # A deep value and a booby-trapped one: each is a deletion of its own key only.
    engine.apply_updates([(WEP, {**GOOD_WEP, "name": "cali1", "labels": Booby()})])
    engine.apply_updates([(POLICY, good_policy(protocol=deep()))])
    engine.flush()
    files = render_files(engine.state())
    assert "cali1" not in files["iptables-filter"] and "cali2" in files["iptables-filter"]
    assert engine.invalid_values == 2 and engine.calc_failures == 0
    assert engine.model.policies == {}


def test_engine_contains_an_unexpected_exception_in_a_handler() -> None:
    """A handler that raises (a calculation bug) costs its key: treated as deleted."""
    engine = CalcEngine("n1")
    handlers = dict(CalcEngine._HANDLERS)
    real = handlers[Kind.WORKLOAD_ENDPOINT]

    def flaky(self: CalcEngine, update: Any, old: Any) -> None:
        if update.value is not None and update.value.iface == "cali1":
            raise Surprise("nobody expects this")
        real(self, update, old)

    handlers[Kind.WORKLOAD_ENDPOINT] = flaky
    engine._HANDLERS = handlers  # type: ignore[misc]
    other = keys.workload_endpoint_key("n1", "k8s", "ns/q", "eth0")
    engine.apply_updates(
        [
            (WEP, {**GOOD_WEP, "name": "cali1"}),
            (other, {**GOOD_WEP, "name": "cali2", "ipv4_nets": ["10.0.1.6/32"]}),
        ]
    )
    engine.snapshot_done()
    engine.flush()
    files = render_files(engine.state())
    assert "cali1" not in files["iptables-filter"] and "cali2" in files["iptables-filter"]
    assert engine.calc_failures == 1 and WEP.split("/")[-3] not in engine.model.weps
    # Positive control: once the handler copes, the key arrives.
    handlers[Kind.WORKLOAD_ENDPOINT] = real
    engine.apply_updates([(WEP, {**GOOD_WEP, "name": "cali1", "mac": "ee:ee:ee:ee:ee:01"})])
    engine.flush()
    assert "cali1" in render_files(engine.state())["iptables-filter"]


def test_engine_contains_an_unexpected_exception_in_one_policys_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-policy guard: rules that cannot be computed are no rules; others render."""
    real = engine_module.scan_rules

    def flaky(rules: Any) -> Any:
        if any(r.protocol == 17 for r in rules):
            raise Surprise("nobody expects this")
        return real(rules)

    monkeypatch.setattr(engine_module, "scan_rules", flaky)
    engine = CalcEngine("n1")
    udp = keys.policy_key("GlobalNetworkPolicy", "", "udp")
    engine.apply_updates(
        [
            (POLICY, good_policy()),
            (udp, {**good_policy(protocol="UDP"), "order": 20}),
            (WEP, {**GOOD_WEP, "name": "cali1"}),
        ]
    )
    engine.snapshot_done()
    engine.flush()
    filt = render_files(engine.state())["iptables-filter"]
    assert engine.calc_failures == 1
    assert "-p tcp -m multiport --dports 80" in filt  # control: the TCP policy rendered
    assert "-p udp -m multiport --dports 80" not in filt
    monkeypatch.setattr(engine_module, "scan_rules", real)
    engine.apply_updates([(udp, {**good_policy(protocol="UDP"), "order": 21})])
    engine.flush()
    assert "-p udp -m multiport --dports 80" in render_files(engine.state())["iptables-filter"]
