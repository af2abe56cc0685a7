"""Adapter from Typha's (key, value) pairs to typed updates: key parsing plus value parsing.

An update whose value cannot be understood is reported as a deletion of that one key.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from felix_client.calc.model.keys import Kind, parse_key
from felix_client.calc.model.values import (
    _config_value,
    _labels,
    parse_block,
    parse_host_endpoint,
    parse_ip_pool,
    parse_network_set,
    parse_node,
    parse_policy,
    parse_profile_rules,
    parse_tier,
    parse_workload_endpoint,
)


class ParsedUpdate(NamedTuple):
    """One update after parsing: ``value is None`` means delete (or unparseable)."""

    kind: Kind
    id: Any
    host: str
    value: Any


def parse_update(key: str, value: Any) -> ParsedUpdate:
    """Parse ``(key, value)``. An unparseable value is reported as a deletion.

    The parsers descend only as deep as the value schema and never stringify a container, so
    nesting beyond the schema cannot matter; and *any* exception (not only the expected
    ValueError/TypeError) costs this one key. Use :func:`parse_error` for the reason."""
    pk = parse_key(key)
    if value is None or pk.kind in (Kind.IGNORED, Kind.READY):
        return ParsedUpdate(pk.kind, pk.id, pk.host, value if pk.kind is Kind.READY else None)
    try:
        parsed = _PARSERS[pk.kind](pk, value)
    except Exception:
        parsed = None
    return ParsedUpdate(pk.kind, pk.id, pk.host, parsed)


def parse_error(key: str, value: Any) -> str | None:
    """Why ``value`` does not parse (for a log line), or None if it does. Slow path only."""
    pk = parse_key(key)
    if value is None or pk.kind in (Kind.IGNORED, Kind.READY):
        return None
    try:
        _PARSERS[pk.kind](pk, value)
    except Exception as exc:
        try:
            text = f"{type(exc).__name__}: {exc}"
        except Exception:
            text = type(exc).__name__
        return text[:300]
    return None


_PARSERS: dict[Kind, Any] = {
    Kind.WORKLOAD_ENDPOINT: lambda pk, v: parse_workload_endpoint(pk.id, pk.host, v),
    Kind.HOST_ENDPOINT: lambda pk, v: parse_host_endpoint(pk.id, pk.host, v),
    Kind.NETWORK_SET: lambda pk, v: parse_network_set(pk.id, v),
    Kind.POLICY: lambda pk, v: parse_policy(pk.id, v),
    Kind.TIER: lambda pk, v: parse_tier(pk.id, v),
    Kind.PROFILE_RULES: lambda pk, v: parse_profile_rules(pk.id, v),
    Kind.PROFILE_LABELS: lambda pk, v: _labels(v),
    Kind.IP_POOL: lambda pk, v: parse_ip_pool(pk.id, v),
    Kind.BLOCK: lambda pk, v: parse_block(pk.id, v),
    Kind.NODE: lambda pk, v: parse_node(pk.id, v),
    Kind.HOST_IP: lambda pk, v: _config_value(v).partition("/")[0],
    Kind.HOST_CONFIG: lambda pk, v: _config_value(v),
    Kind.GLOBAL_CONFIG: lambda pk, v: _config_value(v),
}
