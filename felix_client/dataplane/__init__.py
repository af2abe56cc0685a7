"""Dataplane backends: make the node match the calculation engine's output.

``Dataplane`` is the narrow interface (``apply(delta, state, host)``, ``resync(state, host)``);
``KernelDataplane`` programs ipsets, iptables and routes (optionally in a named network
namespace) and ``DryRunDataplane`` keeps a directory of rendered files instead.
"""

from felix_client.dataplane.base import (
    Dataplane,
    DataplaneError,
    DataplaneStats,
    HostSpec,
    VxlanDevice,
    host_spec,
)
from felix_client.dataplane.dryrun import DryRunDataplane
from felix_client.dataplane.kernel import KernelDataplane

__all__ = [
    "Dataplane",
    "DataplaneError",
    "DataplaneStats",
    "DryRunDataplane",
    "HostSpec",
    "KernelDataplane",
    "VxlanDevice",
    "host_spec",
]
