"""Pure conversions from datastore objects to Calico model key updates.

* ``v3_to_updates`` — a projectcalico.org/v3 resource → updates;
* ``convert_etcd_kv`` / ``etcd_key_for`` / ``etcd_value_for`` — the etcd v3 layout;
* ``k8s_to_updates`` and the per-kind converters — the Kubernetes datastore.

See docs/model.md for the key table and value schemas.
"""

from typha.sync.convert.endpoints import (
    k8s_interface_name,
    split_workload_endpoint_name,
    workload_endpoint_name,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.etcd import (
    CALICO_ETCD_PREFIXES,
    CALICO_ETCD_WATCH_PREFIX,
    convert_etcd_kv,
    etcd_key_for,
    etcd_value_for,
    is_calico_etcd_key,
    parse_v3_etcd_key,
)
from typha.sync.convert.k8s import (
    crd_to_v3,
    k8s_to_updates,
    namespace_to_profile,
    network_policy_to_v3,
    node_to_v3,
    pod_to_updates,
    pod_to_workload_endpoint,
    pod_workload_endpoint_key,
    service_account_to_profile,
)
from typha.sync.convert.kinds import KINDS, KINDS_BY_PLURAL, KindInfo, kind_info
from typha.sync.convert.v3 import v3_to_updates

__all__ = [
    "CALICO_ETCD_PREFIXES",
    "CALICO_ETCD_WATCH_PREFIX",
    "KINDS",
    "KINDS_BY_PLURAL",
    "InvalidResource",
    "KindInfo",
    "convert_etcd_kv",
    "crd_to_v3",
    "etcd_key_for",
    "etcd_value_for",
    "is_calico_etcd_key",
    "k8s_interface_name",
    "k8s_to_updates",
    "kind_info",
    "namespace_to_profile",
    "network_policy_to_v3",
    "node_to_v3",
    "parse_v3_etcd_key",
    "pod_to_updates",
    "pod_to_workload_endpoint",
    "pod_workload_endpoint_key",
    "service_account_to_profile",
    "split_workload_endpoint_name",
    "v3_to_updates",
    "workload_endpoint_name",
]
