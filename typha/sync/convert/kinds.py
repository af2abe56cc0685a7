"""The projectcalico.org/v3 kinds we know: their etcd plural and whether they are namespaced.

Plurals are those libcalico-go registers for the etcd v3 layout (docs/model.md, "etcd layout").
``KubernetesNetworkPolicy`` and ``IPAMBlock`` have no registered etcd plural; we use
``kubernetesnetworkpolicies`` (our own, so that a KNP copied into etcd has a home) and
``ipamblocks`` (the CRD plural; etcd stores blocks at the v1-style IPAM path instead, see
``etcd.etcd_key_for``).
"""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION_V3 = "projectcalico.org/v3"
API_VERSION_CRD = "crd.projectcalico.org/v1"


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str
    plural: str
    namespaced: bool


_ALL: tuple[KindInfo, ...] = (
    KindInfo("WorkloadEndpoint", "workloadendpoints", True),
    KindInfo("NetworkPolicy", "networkpolicies", True),
    KindInfo("StagedNetworkPolicy", "stagednetworkpolicies", True),
    KindInfo("KubernetesNetworkPolicy", "kubernetesnetworkpolicies", True),
    KindInfo("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", True),
    KindInfo("NetworkSet", "networksets", True),
    KindInfo("GlobalNetworkPolicy", "globalnetworkpolicies", False),
    KindInfo("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", False),
    KindInfo("GlobalNetworkSet", "globalnetworksets", False),
    KindInfo("Tier", "tiers", False),
    KindInfo("Profile", "profiles", False),
    KindInfo("HostEndpoint", "hostendpoints", False),
    KindInfo("IPPool", "ippools", False),
    KindInfo("IPReservation", "ipreservations", False),
    KindInfo("Node", "nodes", False),
    KindInfo("FelixConfiguration", "felixconfigurations", False),
    KindInfo("ClusterInformation", "clusterinformations", False),
    KindInfo("BGPConfiguration", "bgpconfigurations", False),
    KindInfo("BGPPeer", "bgppeers", False),
    KindInfo("BGPFilter", "BGPFilters", False),
    KindInfo("CalicoNodeStatus", "caliconodestatuses", False),
    KindInfo("LiveMigration", "livemigrations", False),
    KindInfo("KubeControllersConfiguration", "kubecontrollersconfigurations", False),
    KindInfo("IPAMConfiguration", "ipamconfigurations", False),
    KindInfo("IPAMConfig", "ipamconfigs", False),
    KindInfo("IPAMBlock", "ipamblocks", False),
    KindInfo("BlockAffinity", "blockaffinities", False),
)

KINDS: dict[str, KindInfo] = {k.kind: k for k in _ALL}
KINDS_BY_PLURAL: dict[str, KindInfo] = {k.plural: k for k in _ALL}


def kind_info(kind: str) -> KindInfo | None:
    """The registry entry for a v3 kind, or None if we do not know it."""
    return KINDS.get(kind)
