"""A small cluster in model (key, value) form, seen from node ``n1``, built on the seed's
examples: ``allow-tcp-6379`` (frontend → database on TCP 6379), a GlobalNetworkPolicy in a
``security`` tier that denies UDP 9999 and passes everything else, a named port, a network set and
a pool with natOutgoing whose encapsulation is chosen by the caller.
"""

from __future__ import annotations

from typing import Any

from felix_client.calc import synthetic as s

NODE = "n1"
KV = tuple[str, Any]

POOL = "10.65.0.0/16"
DB_IP = "10.65.0.5"
OTHER_IP = "10.65.0.6"
FRONTEND_IP = "10.65.1.5"  # on n2


def db_wep(labels: dict[str, str] | None = None) -> KV:
    return s.wep(
        NODE,
        "myproject",
        "database",
        DB_IP,
        labels if labels is not None else {"app": "database"},
        ports=[{"name": "redis", "protocol": "TCP", "port": 6379}],
    )


def other_wep(labels: dict[str, str] | None = None) -> KV:
    return s.wep(
        NODE, "myproject", "other", OTHER_IP, labels if labels is not None else {"app": "other"}
    )


def frontend_wep(labels: dict[str, str] | None = None) -> KV:
    return s.wep(
        "n2",
        "myproject",
        "frontend",
        FRONTEND_IP,
        labels if labels is not None else {"app": "frontend"},
    )


def sample_kvs(encap: str = "none") -> list[KV]:
    """``encap``: ``none``, ``ipip`` or ``vxlan`` (mode Always) for the pool."""
    kvs: list[KV] = [
        s.tier("default", 1_000_000),
        s.tier("security", 100, "Deny"),
        s.pool(
            POOL,
            ipip="Always" if encap == "ipip" else "Never",
            vxlan="Always" if encap == "vxlan" else "Never",
            nat=True,
        ),
        s.node(NODE, "10.0.0.1/24", vtep_ip="10.65.0.1", vtep_mac="66:00:00:00:00:01"),
        s.node("n2", "10.0.0.2/24", vtep_ip="10.65.1.1", vtep_mac="66:00:00:00:00:02"),
        s.block("10.65.0.0/26", NODE),
        s.block("10.65.1.0/26", "n2"),
        db_wep(),
        other_wep(),
        frontend_wep(),
        s.network_set("myproject/blocked", ["192.0.2.0/24"], {"role": "blocked"}),
        s.policy(
            "NetworkPolicy",
            "myproject",
            "allow-tcp-6379",
            "(app == 'database') && projectcalico.org/namespace == 'myproject'",
            inbound=[
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "src_selector": "(projectcalico.org/namespace == 'myproject') "
                    "&& (app == 'frontend')",
                    "dst_ports": [6379],
                },
                {"action": "Allow", "protocol": "TCP", "dst_ports": ["redis"]},
            ],
            outbound=[{"action": "Allow"}],
            types=("ingress", "egress"),
        ),
        s.policy(
            "GlobalNetworkPolicy",
            "",
            "security-udp",
            "has(projectcalico.org/namespace)",
            tier="security",
            order=10,
            inbound=[
                {"action": "Deny", "protocol": "UDP", "dst_ports": [9999]},
                {"action": "Deny", "src_selector": "role == 'blocked'"},
                {"action": "Pass"},
            ],
            types=("ingress",),
        ),
    ]
    kvs += s.namespace_profiles("myproject", {"project": "myproject"})
    kvs += s.service_account_profiles("myproject")
    return kvs
