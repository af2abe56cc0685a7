"""Datastore content for the Felix tests.

config/examples, plus a policy that is active on node1 (the examples' own policies select the
database pod on node2, so on node1 they program no selector ipset): nginx on node1 accepts
port 80 from the frontend pod, also on node1, so Felix programs a selector ipset holding
192.168.162.147 and per-policy chains on both local endpoints' chains.
(tests/calico's `extended` set is not used here: one of its rules, protocol TCP with notProtocol
UDP, is rendered by Felix as two `-p` flags that iptables-nft-restore rejects, and Felix panics.)
"""

from __future__ import annotations

from typing import Any

from tests.calico import datasets

NGINX_FROM_FRONTEND: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "nginx-from-frontend"},
    "spec": {
        "order": 100,
        "selector": "app == 'nginx'",
        "types": ["Ingress"],
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'frontend'"},
                "destination": {"ports": [80]},
            }
        ],
    },
}

NODE1_ENDPOINTS = {"calia53571dc704": "192.168.162.146", "cali8b75868d7bb": "192.168.162.147"}


def examples() -> list[dict[str, Any]]:
    return [*datasets.examples(), NGINX_FROM_FRONTEND]
