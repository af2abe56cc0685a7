"""ClusterModel: every parsed object the node knows about, keyed by identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from felix_client.calc.model.keys import Kind
from felix_client.calc.model.objects import (
    Block,
    Endpoint,
    HostEndpoint,
    IPPool,
    NetworkSet,
    NodeInfo,
    Policy,
    PolicyId,
    ProfileRules,
    Tier,
    WorkloadEndpoint,
)
from felix_client.calc.model.updates import ParsedUpdate


@dataclass
class ClusterModel:
    """Every parsed object the node knows about, keyed by identity. Pure storage: indexes over it
    live in the calculation modules."""

    weps: dict[str, WorkloadEndpoint] = field(default_factory=dict)
    heps: dict[str, HostEndpoint] = field(default_factory=dict)
    netsets: dict[str, NetworkSet] = field(default_factory=dict)
    policies: dict[PolicyId, Policy] = field(default_factory=dict)
    tiers: dict[str, Tier] = field(default_factory=dict)
    profile_rules: dict[str, ProfileRules] = field(default_factory=dict)
    profile_labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    pools: dict[str, IPPool] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    host_ips: dict[str, str] = field(default_factory=dict)
    host_config: dict[str, dict[str, str]] = field(default_factory=dict)
    global_config: dict[str, str] = field(default_factory=dict)
    ready: bool = False

    def store(self, update: ParsedUpdate) -> Any:
        """Apply ``update``; returns the previous value (``None`` if there was none)."""
        kind = update.kind
        if kind is Kind.IGNORED:
            return None
        if kind is Kind.READY:
            old = self.ready
            self.ready = bool(update.value)
            return old
        if kind is Kind.HOST_CONFIG:
            table = self.host_config.setdefault(update.host, {})
        else:
            table = getattr(self, _TABLES[kind])
        if update.value is None:
            return table.pop(update.id, None)
        old = table.get(update.id)
        table[update.id] = update.value
        return old

    def effective_labels(self, endpoint: Endpoint) -> Mapping[str, str]:
        """Own labels over profile labels; earlier profiles win over later ones."""
        parents = getattr(endpoint, "profile_ids", ())
        if not parents:
            return endpoint.labels
        merged: dict[str, str] = {}
        for profile in reversed(parents):
            merged.update(self.profile_labels.get(profile, {}))
        merged.update(endpoint.labels)
        return merged

    def config(self, host: str, name: str, default: str | None = None) -> str | None:
        """Host config overrides global config (as Felix's config batcher does)."""
        host_cfg = self.host_config.get(host, {})
        if name in host_cfg:
            return host_cfg[name]
        return self.global_config.get(name, default)


_TABLES: dict[Kind, str] = {
    Kind.WORKLOAD_ENDPOINT: "weps",
    Kind.HOST_ENDPOINT: "heps",
    Kind.NETWORK_SET: "netsets",
    Kind.POLICY: "policies",
    Kind.TIER: "tiers",
    Kind.PROFILE_RULES: "profile_rules",
    Kind.PROFILE_LABELS: "profile_labels",
    Kind.IP_POOL: "pools",
    Kind.BLOCK: "blocks",
    Kind.NODE: "nodes",
    Kind.HOST_IP: "host_ips",
    Kind.GLOBAL_CONFIG: "global_config",
}
