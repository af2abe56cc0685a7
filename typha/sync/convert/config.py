"""FelixConfiguration and ClusterInformation → config keys.

FelixConfiguration ``default`` → one ``GlobalConfigKey`` per set spec field;
``node.<host>`` → ``HostConfigKey``s for that host; any other name (selector-scoped) → the
passthrough ``ResourceKey`` only. The config name is the spec field with its first letter
upper-cased (``logSeverityScreen`` → ``LogSeverityScreen``), except the fields whose Felix
name differs (``CONFIG_NAME_OVERRIDES``: ``bpfEnabled`` → ``BPFEnabled``, ...). Values are
strings, formatted as Felix parses them (``config_value``). Keys are emitted sorted by config name.

ClusterInformation ``default`` → ``GlobalConfigKey``s ``ClusterGUID``, ``ClusterType``,
``CalicoVersion`` (those set) and ``ReadyFlagKey`` (bool, only when ``datastoreReady`` is set).
"""

from __future__ import annotations

import json
import re
from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import opt_bool, opt_str, passthrough_object, resource_name, spec
from typha.sync.convert.errors import InvalidResource

# v3 field → Felix parameter, where the field name with its first letter upper-cased is not
# Felix's name: libcalico-go names each config key after the Go field of FelixConfigurationSpec
# (acronyms upper-case: BPFEnabled, NFTablesMode, VXLANEnabled, ...) unless a confignamev1 tag
# renames it (the *Secs forms).  The list is the whole set at the Calico version we follow.
CONFIG_NAME_OVERRIDES = {
    "iptablesPostWriteCheckInterval": "IptablesPostWriteCheckIntervalSecs",
    "iptablesLockProbeInterval": "IptablesLockProbeIntervalMillis",
    "xdpRefreshInterval": "XDPRefreshInterval",
    "netlinkTimeout": "NetlinkTimeoutSecs",
    "ipipEnabled": "IpInIpEnabled",
    "ipipMTU": "IpInIpMtu",
    "vxlanEnabled": "VXLANEnabled",
    "vxlanMTU": "VXLANMTU",
    "vxlanMTUV6": "VXLANMTUV6",
    "vxlanPort": "VXLANPort",
    "vxlanVNI": "VXLANVNI",
    "reportingInterval": "ReportingIntervalSecs",
    "reportingTTL": "ReportingTTLSecs",
    "endpointReportingDelay": "EndpointReportingDelaySecs",
    "usageReportingInitialDelay": "UsageReportingInitialDelaySecs",
    "usageReportingInterval": "UsageReportingIntervalSecs",
    "natPortRange": "NATPortRange",
    "natOutgoingAddress": "NATOutgoingAddress",
    "natOutgoingExclusions": "NATOutgoingExclusions",
    "ipForwarding": "IPForwarding",
    "externalNodesList": "ExternalNodesCIDRList",
    "xdpEnabled": "XDPEnabled",
    "nftablesMode": "NFTablesMode",
    "nftablesFlowTableOffload": "NFTablesFlowTableOffload",
    "nftablesFlowTableDataIfacePattern": "NFTablesFlowTableDataIfacePattern",
    "bpfEnabled": "BPFEnabled",
    "bpfOverlayHostSourceIP": "BPFOverlayHostSourceIP",
    "bpfDisableUnprivileged": "BPFDisableUnprivileged",
    "bpfJITHardening": "BPFJITHardening",
    "bpfLogLevel": "BPFLogLevel",
    "bpfConntrackLogLevel": "BPFConntrackLogLevel",
    "bpfConntrackMode": "BPFConntrackCleanupMode",
    "bpfConntrackTimeouts": "BPFConntrackTimeouts",
    "bpfIPFragTimeout": "BPFIPFragTimeout",
    "bpfLogFilters": "BPFLogFilters",
    "bpfCTLBLogFilter": "BPFCTLBLogFilter",
    "bpfDataIfacePattern": "BPFDataIfacePattern",
    "bpfL3IfacePattern": "BPFL3IfacePattern",
    "bpfConnectTimeLoadBalancingEnabled": "BPFConnectTimeLoadBalancingEnabled",
    "bpfConnectTimeLoadBalancing": "BPFConnectTimeLoadBalancing",
    "bpfHostNetworkedNATWithoutCTLB": "BPFHostNetworkedNATWithoutCTLB",
    "bpfExternalServiceMode": "BPFExternalServiceMode",
    "bpfDSROptoutCIDRs": "BPFDSROptoutCIDRs",
    "bpfExtToServiceConnmark": "BPFExtToServiceConnmark",
    "bpfKubeProxyIptablesCleanupEnabled": "BPFKubeProxyIptablesCleanupEnabled",
    "bpfKubeProxyMinSyncPeriod": "BPFKubeProxyMinSyncPeriod",
    "bpfKubeProxyHealthzPort": "BPFKubeProxyHealthzPort",
    "bpfPSNATPorts": "BPFPSNATPorts",
    "bpfMapSizeNATFrontend": "BPFMapSizeNATFrontend",
    "bpfMapSizeNATBackend": "BPFMapSizeNATBackend",
    "bpfMapSizeNATAffinity": "BPFMapSizeNATAffinity",
    "bpfMapSizeRoute": "BPFMapSizeRoute",
    "bpfMapSizeConntrack": "BPFMapSizeConntrack",
    "bpfMapSizePerCpuConntrack": "BPFMapSizePerCPUConntrack",
    "bpfMapSizeConntrackScaling": "BPFMapSizeConntrackScaling",
    "bpfMapSizeConntrackCleanupQueue": "BPFMapSizeConntrackCleanupQueue",
    "bpfMapSizeIPSets": "BPFMapSizeIPSets",
    "bpfMapSizeIfState": "BPFMapSizeIfState",
    "bpfHostConntrackBypass": "BPFHostConntrackBypass",
    "bpfIPFragmentReassemblyEnabled": "BPFIPFragmentReassemblyEnabled",
    "bpfEnforceRPF": "BPFEnforceRPF",
    "bpfPolicyDebugEnabled": "BPFPolicyDebugEnabled",
    "bpfForceTrackPacketsFromIfaces": "BPFForceTrackPacketsFromIfaces",
    "bpfDisableGROForIfaces": "BPFDisableGROForIfaces",
    "bpfExcludeCIDRsFromNAT": "BPFExcludeCIDRsFromNAT",
    "bpfExportBufferSizeMB": "BPFExportBufferSizeMB",
    "bpfRedirectToPeer": "BPFRedirectToPeer",
    "bpfAttachType": "BPFAttachType",
    "bpfProfiling": "BPFProfiling",
    "ipv4NormalRoutePriority": "IPv4NormalRoutePriority",
    "ipv4ElevatedRoutePriority": "IPv4ElevatedRoutePriority",
    "ipv6NormalRoutePriority": "IPv6NormalRoutePriority",
    "ipv6ElevatedRoutePriority": "IPv6ElevatedRoutePriority",
    "wireguardKeepAlive": "WireguardPersistentKeepAlive",
    "awsSrcDstCheck": "AWSSrcDstCheck",
    "mtuIfacePattern": "MTUIfacePattern",
    "bpfMaglevMaxEndpointsPerService": "BPFMaglevMaxEndpointsPerService",
    "bpfMaglevMaxServices": "BPFMaglevMaxServices",
}
# Spec fields that are not Felix parameters at all.
NOT_CONFIG = frozenset({"nodeSelector"})
# Durations Felix reads in milliseconds (every other duration is in seconds).
MILLISECOND_FIELDS = frozenset({"iptablesLockProbeInterval"})

# Lists whose empty form means "nothing" to Felix and must be spelled "none" (an empty string
# would mean "use the default").
_NONE_WHEN_EMPTY = frozenset({"failsafeInboundHostPorts", "failsafeOutboundHostPorts"})

_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def config_name(field: str) -> str:
    return CONFIG_NAME_OVERRIDES.get(field) or field[:1].upper() + field[1:]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _duration_seconds(text: str, scale: float = 1.0) -> str:
    """Go duration (``1m30s``, ``100ms``) → seconds (``90``, ``0.1``): Felix reads seconds
    (``scale`` 1000 for the millisecond fields)."""
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return _number(round(total * scale, 9))


def _item(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _duration_seconds(value) if _DURATION.match(value) else value
    if isinstance(value, dict):
        if set(value) == {"min", "max"}:
            return f"{value['min']}-{value['max']}"
        if {"protocol", "port"} <= set(value):
            proto = str(value["protocol"]).lower()
            net = value.get("net")
            return f"{proto}:{net}:{value['port']}" if net else f"{proto}:{value['port']}"
        if set(value) == {"name", "timeout"}:
            return f"{value['name']}={_item(value['timeout'])}"
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    raise InvalidResource(f"unsupported value type {type(value).__name__}")


def config_value(field: str, value: Any) -> str:
    """A FelixConfiguration spec value as the string Felix parses."""
    if field in MILLISECOND_FIELDS and isinstance(value, str) and _DURATION.match(value):
        return _duration_seconds(value, 1000.0)
    if isinstance(value, list):
        if not value:
            return "none" if field in _NONE_WHEN_EMPTY else ""
        return ",".join(_item(v) for v in value)
    return _item(value)


def felix_configuration_updates(resource: dict[str, Any]) -> list[Update]:
    name = resource_name(resource)
    s = spec(resource)
    if name == "default":

        def key_for(n: str) -> str:
            return keys.global_config_key(n)
    elif name.startswith("node.") and len(name) > len("node."):
        host = name[len("node.") :]

        def key_for(n: str) -> str:
            return keys.host_config_key(host, n)
    else:
        return [
            Update(
                keys.resource_key("felixconfigurations", name),
                passthrough_object(resource, "FelixConfiguration"),
            )
        ]
    entries: dict[str, str] = {}
    for field, value in s.items():
        if value is None or field in NOT_CONFIG:
            continue
        try:
            entries[config_name(field)] = config_value(field, value)
        except InvalidResource as exc:
            raise InvalidResource(exc.reason, field=f"spec.{field}") from None
    return [Update(key_for(n), entries[n]) for n in sorted(entries)]


def cluster_information_updates(resource: dict[str, Any]) -> list[Update]:
    name = resource_name(resource)
    if name != "default":
        return []
    s = spec(resource)
    out = []
    for field, cfg in (
        ("clusterGUID", "ClusterGUID"),
        ("clusterType", "ClusterType"),
        ("calicoVersion", "CalicoVersion"),
    ):
        value = opt_str(s.get(field), f"spec.{field}")
        if value:
            out.append(Update(keys.global_config_key(cfg), value))
    if s.get("datastoreReady") is not None:
        out.append(
            Update(keys.READY_FLAG_KEY, opt_bool(s["datastoreReady"], "spec.datastoreReady"))
        )
    return out
