"""Key parsing: classify a model key path into a kind and an identity.

The key table is in docs/model.md ("Key table"). Unknown paths give ``Kind.IGNORED``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from felix_client.calc.model.objects import PolicyId
from typha.model.keys import unescape


class Kind(StrEnum):
    WORKLOAD_ENDPOINT = "wep"
    HOST_ENDPOINT = "hep"
    NETWORK_SET = "netset"
    POLICY = "policy"
    TIER = "tier"
    PROFILE_RULES = "profile_rules"
    PROFILE_LABELS = "profile_labels"
    IP_POOL = "pool"
    BLOCK = "block"
    NODE = "node"
    HOST_IP = "host_ip"
    HOST_CONFIG = "host_config"
    GLOBAL_CONFIG = "global_config"
    READY = "ready"
    IGNORED = "ignored"


class ParsedKey(NamedTuple):
    """A classified key: ``kind`` plus the identity the rest of the calculation uses.
    (NamedTuples: one is built per update, and they are much cheaper than frozen dataclasses.)"""

    kind: Kind
    id: Any = None
    host: str = ""


_IGNORED = ParsedKey(Kind.IGNORED)


def parse_key(key: str) -> ParsedKey:
    """Classify a model key path (docs/model.md, "Key table"). Unknown paths give
    ``Kind.IGNORED``."""
    parts = key.split("/")
    # parts[0] == "" because keys start with "/".
    if len(parts) < 3 or parts[1] != "calico":
        return _IGNORED
    if parts[2] == "v1":
        return _parse_v1_key(key, parts)
    if parts[2] == "ipam" and len(parts) == 8 and parts[4] == "assignment" and parts[6] == "block":
        if parts[5] == "ipv4":
            return ParsedKey(Kind.BLOCK, _cidr(parts[7]))
        return _IGNORED
    if parts[2] == "resources" and len(parts) >= 7 and parts[5] == "nodes":
        return ParsedKey(Kind.NODE, unescape(parts[6]))
    return _IGNORED


def _cidr(segment: str) -> str:
    addr, _, length = segment.rpartition("-")
    return f"{addr}/{length}"


def _parse_v1_key(key: str, parts: list[str]) -> ParsedKey:
    n = len(parts)
    section = parts[3] if n > 3 else ""
    if section == "host" and n >= 6:
        host = _unescape_fast(parts[4])
        sub = parts[5]
        if sub == "workload" and n == 10 and parts[8] == "endpoint":
            return ParsedKey(Kind.WORKLOAD_ENDPOINT, key, host)
        if sub == "endpoint" and n == 7:
            return ParsedKey(Kind.HOST_ENDPOINT, key, host)
        if sub == "config" and n == 7:
            return ParsedKey(Kind.HOST_CONFIG, unescape(parts[6]), host)
        if sub == "bird_ip" and n == 6:
            return ParsedKey(Kind.HOST_IP, host, host)
        return _IGNORED
    if section == "policy" and n >= 6:
        if parts[4] == "tier":
            if n == 7 and parts[6] == "metadata":
                return ParsedKey(Kind.TIER, unescape(parts[5]))
            if n == 8 and parts[6] == "policy":
                return ParsedKey(Kind.POLICY, _legacy_policy_id(unescape(parts[5]), parts[7]))
            return _IGNORED
        if parts[4] == "profile" and n == 7:
            name = unescape(parts[5])
            if parts[6] == "rules":
                return ParsedKey(Kind.PROFILE_RULES, name)
            if parts[6] == "labels":
                return ParsedKey(Kind.PROFILE_LABELS, name)
            return _IGNORED
        if n == 7:
            return ParsedKey(
                Kind.POLICY, PolicyId(unescape(parts[4]), unescape(parts[5]), unescape(parts[6]))
            )
        return _IGNORED
    if section == "netset" and n == 5:
        return ParsedKey(Kind.NETWORK_SET, unescape(parts[4]))
    if section == "ipam" and n == 7 and parts[4] == "v4" and parts[5] == "pool":
        return ParsedKey(Kind.IP_POOL, _cidr(parts[6]))
    if section == "config" and n == 5:
        return ParsedKey(Kind.GLOBAL_CONFIG, unescape(parts[4]))
    if section == "Ready" and n == 4:
        return ParsedKey(Kind.READY)
    return _IGNORED


def _legacy_policy_id(tier: str, escaped_name: str) -> PolicyId:
    name = unescape(escaped_name)
    namespace, sep, short = name.partition("/")
    if sep:
        return PolicyId("", namespace, short, legacy_tier=tier)
    return PolicyId("", "", name, legacy_tier=tier)


def _unescape_fast(segment: str) -> str:
    return unescape(segment) if "%" in segment else segment
