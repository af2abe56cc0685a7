"""Shared by the converter tests: v3 resources in a line, and their updates as maps or bytes."""

from __future__ import annotations

import copy
from typing import Any

import msgpack

from tests.seed_examples import allow_tcp_6379_spec
from typha.sync.base import Update
from typha.sync.convert import v3_to_updates

V3 = "projectcalico.org/v3"


def res(kind: str, name: str, spec: dict[str, Any] | None = None, namespace: str = "", **meta: Any):
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": V3, "kind": kind, "metadata": metadata, "spec": spec or {}}


def one(resource: dict[str, Any]) -> Update:
    updates = v3_to_updates(resource)
    assert len(updates) == 1, updates
    return updates[0]


def as_map(updates: list[Update]) -> dict[str, Any]:
    return {u.key: u.value for u in updates}


def mutate(obj: dict[str, Any], fn: Any) -> dict[str, Any]:
    """A deep copy of ``obj`` changed by ``fn``."""
    copy_ = copy.deepcopy(obj)
    fn(copy_)
    return copy_


def packed(updates: list[Update]) -> list[tuple[str, bytes]]:
    return [(u.key, msgpack.packb(u.value)) for u in updates]


# Sample resources that tests of several kinds use.
ALLOW_6379 = res("NetworkPolicy", "allow-tcp-6379", allow_tcp_6379_spec(), namespace="myproject")


WEP = res(
    "WorkloadEndpoint",
    "node--1-k8s-nginx--abc-eth0",
    {
        "orchestrator": "k8s",
        "node": "node-1",
        "pod": "nginx-abc",
        "endpoint": "eth0",
        "containerID": "c0ffee",
        "serviceAccountName": "default",
        "ipNetworks": ["192.168.162.146/32", "fd00::5/128"],
        "ipNATs": [{"internalIP": "192.168.162.146", "externalIP": "172.16.0.5"}],
        "profiles": ["kns.web", "ksa.web.default"],
        "interfaceName": "cali0123456789a",
        "mac": "EE:EE:EE:EE:EE:01",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "", "protocol": "UDP", "port": 53, "hostPort": 5353},
        ],
    },
    namespace="web",
    labels={"app": "nginx", "pcns.spoof": "x", "pcsa.spoof": "y"},
    annotations={"b": "2", "a": "1"},
    generateName="nginx-",
)


NODE = res(
    "Node",
    "node1",
    {
        "bgp": {"ipv4Address": "10.0.0.11/24", "ipv4IPIPTunnelAddr": "192.168.162.128"},
        "ipv4VXLANTunnelAddr": "192.168.162.129",
        "vxlanTunnelMACAddr": "66:AA:BB:CC:DD:EE",
        "wireguard": {"interfaceIPv4Address": "192.168.162.130"},
    },
    resourceVersion="1234",
    uid="u-1",
)
