"""Example objects the project started from (such as `db-network-policy`), shared by tests."""

from __future__ import annotations

from typing import Any


def db_network_policy(namespace: str = "np-demo", **metadata: Any) -> dict[str, Any]:
    """The seed's Kubernetes NetworkPolicy `db-network-policy` (a fresh copy each call)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-network-policy", "namespace": namespace, **metadata},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                        {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                        {"podSelector": {"matchLabels": {"role": "frontend"}}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 6379}],
                }
            ],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                    "ports": [{"protocol": "TCP", "port": 5978}],
                }
            ],
        },
    }


def allow_tcp_6379_spec() -> dict[str, Any]:
    """The spec of the seed's Calico NetworkPolicy `allow-tcp-6379`: TCP 6379 from frontends to
    the database (a fresh copy each call)."""
    return {
        "selector": "app == 'database'",
        "types": ["Ingress", "Egress"],
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'frontend'"},
                "destination": {"ports": [6379]},
            }
        ],
        "egress": [{"action": "Allow"}],
    }
