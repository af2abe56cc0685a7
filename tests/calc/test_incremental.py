"""Incremental calculation: delta(previous state) == full state == a from-scratch engine's state,
and small updates only touch what they affect."""

from __future__ import annotations

import random
from typing import Any

import pytest

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine
from felix_client.calc.render.chains import chain_references
from felix_client.calc.state import DataplaneState
from tests.calc.randcluster import (
    LOCAL,
    NAMESPACES,
    rand_cluster,
    rand_labels,
    rand_policy,
    rand_rule,
    rand_wep,
)
from typha.model import keys

ROOT_CHAINS = {"cali-FORWARD", "cali-INPUT", "cali-OUTPUT", "cali-POSTROUTING"}


def check_references(state: DataplaneState) -> None:
    """No dangling jumps or set names, and no programmed chain that nothing references."""
    for chains in (state.filter_chains, state.nat_chains):
        referenced: set[str] = set()
        for rules in chains.values():
            referenced |= chain_references(rules)
            for rule in rules:
                parts = rule.split()
                for i, tok in enumerate(parts):
                    if tok == "--match-set":
                        assert parts[i + 1] in state.ipsets, rule
        assert referenced <= set(chains)
        assert set(chains) - referenced <= ROOT_CHAINS


def fresh_state(kvs: dict[str, Any]) -> DataplaneState:
    engine = CalcEngine(LOCAL)
    engine.apply_updates((k, v) for k, v in kvs.items() if v is not None)
    engine.snapshot_done()
    engine.flush()
    return engine.state()


def rand_update(rng: random.Random, current: dict[str, Any], counter: list[int]) -> tuple[str, Any]:
    counter[0] += 1
    n = counter[0]
    weps = [k for k, v in current.items() if "/workload/" in k and v is not None]
    policies = [
        k
        for k, v in current.items()
        if k.startswith("/calico/v1/policy/")
        and "/tier/" not in k
        and "/profile/" not in k
        and v is not None
    ]
    choice = rng.random()
    if choice < 0.3 and weps:
        key = rng.choice(weps)
        value = dict(current[key])
        what = rng.choice(("labels", "ip", "state", "ports", "delete", "profiles", "iface", "move"))
        if what == "labels":
            value["labels"] = {
                **{k: v for k, v in value["labels"].items() if "/" in k},
                **rand_labels(rng),
            }
        elif what == "ip":
            value["ipv4_nets"] = [f"10.0.{rng.choice((1, 2, 3, 9))}.{rng.randrange(2, 60)}/32"]
        elif what == "state":
            value["state"] = "down" if value["state"] == "active" else "active"
        elif what == "ports":
            value["ports"] = [{"name": "http", "protocol": "TCP", "port": rng.choice((80, 81))}]
        elif what == "iface":
            value["name"] = f"calirenamed{rng.randrange(4)}"
        elif what == "move":
            # Same workload, other host: a different key; delete the old one.
            node = "node-2" if key.startswith(f"/calico/v1/host/{LOCAL}/") else LOCAL
            return key.replace(key.split("/")[4], node, 1), value
        elif what == "profiles":
            value["profile_ids"] = list(reversed(value["profile_ids"]))
        else:
            return key, None
        return key, value
    if choice < 0.4:
        return rand_wep(rng, 100 + n)
    if choice < 0.55 and policies:
        key = rng.choice(policies)
        if rng.random() < 0.2:
            return key, None
        value = dict(current[key])
        what = rng.choice(("selector", "rules", "order", "tier", "types"))
        if what == "selector":
            value["selector"] = rand_policy(rng, 0)[1]["selector"]
        elif what == "rules":
            value["inbound_rules"] = [rand_rule(rng) for _ in range(rng.randrange(3))]
        elif what == "order":
            value["order"] = rng.choice((1, 3, 7))
        elif what == "tier":
            value["tier"] = rng.choice(("default", "t1", "t2", "ghost"))
        else:
            value["types"] = rng.choice(([], ["ingress"], ["egress"], ["ingress", "egress"]))
        return key, value
    if choice < 0.62:
        return rand_policy(rng, 100 + n)
    if choice < 0.67:
        name = rng.choice(("default", "t1", "t2"))
        if rng.random() < 0.2:
            return keys.tier_key(name), None
        return s.tier(name, rng.choice((None, 1, 10, 100)), rng.choice(("Deny", "Pass")))
    if choice < 0.74:
        ns = rng.choice(NAMESPACES)
        if rng.random() < 0.5:
            return s.namespace_profiles(ns, {"team": rng.choice(("x", "y", "z"))})[1]
        return keys.profile_rules_key(f"kns.{ns}"), {
            "inbound_rules": [rand_rule(rng)],
            "outbound_rules": [{"action": "Allow"}],
        }
    if choice < 0.8:
        name = f"ns1/netset{rng.randrange(3)}"
        if rng.random() < 0.3:
            return keys.network_set_key(name), None
        return s.network_set(
            name,
            [rng.choice(("172.16.5.0/24", "0.0.0.0/0", "10.0.9.0/24"))],
            {"kind": "net", **rand_labels(rng)},
        )
    if choice < 0.85:
        return s.pool(
            "10.0.0.0/16",
            ipip=rng.choice(("Always", "Never", "CrossSubnet")),
            vxlan=rng.choice(("Never", "Never", "Always")),
            nat=rng.random() < 0.5,
        )
    if choice < 0.9:
        node = rng.choice(("node-1", "node-2", "node-3"))
        return s.node(
            node,
            f"192.168.{rng.choice((1, 2))}.{rng.randrange(10, 20)}/24",
            vtep_ip=f"10.0.{rng.randrange(1, 4)}.1",
            vtep_mac="66:00:00:00:00:0" + str(rng.randrange(9)),
        )
    if choice < 0.95:
        cidr = f"10.0.{rng.randrange(1, 5)}.0/26"
        if rng.random() < 0.3:
            return keys.block_key(cidr), None
        return s.block(cidr, rng.choice(("node-1", "node-2", "node-3", None)))
    if rng.random() < 0.3:
        node = rng.choice(("node-2", "node-3"))
        if rng.random() < 0.5:
            return keys.host_config_key(node, "IPv4VXLANTunnelAddr"), rng.choice(
                (f"10.0.8.{n}", None)
            )
        return keys.host_config_key(node, "VXLANTunnelMACAddr"), f"66:00:00:00:01:0{n % 3}"
    name = rng.choice(("DefaultEndpointToHostAction", "LogPrefix", "AllowIPIPPacketsFromWorkloads"))
    value = {
        "DefaultEndpointToHostAction": rng.choice(("ACCEPT", "DROP", "RETURN")),
        "LogPrefix": rng.choice(("calico-packet", "x")),
        "AllowIPIPPacketsFromWorkloads": rng.choice(("true", "false")),
    }[name]
    if rng.random() < 0.5:
        return keys.host_config_key(LOCAL, name), value
    return keys.global_config_key(name), value


@pytest.mark.parametrize("seed", range(25))
def test_deltas_reproduce_full_state(seed: int) -> None:
    rng = random.Random(seed)
    snapshot = rand_cluster(rng, n_weps=10, n_policies=6)
    current: dict[str, Any] = dict(snapshot)
    engine = CalcEngine(LOCAL)
    engine.apply_updates(snapshot)
    engine.snapshot_done()
    first = engine.flush()
    state = first.apply_to(DataplaneState())
    assert state == engine.state() == fresh_state(current)
    counter = [0]
    for _ in range(30):
        batch = [rand_update(rng, current, counter) for _ in range(rng.randrange(1, 5))]
        for key, value in batch:
            current[key] = value
        engine.apply_updates(batch)
        delta = engine.flush()
        state = delta.apply_to(state)
        full = engine.state()
        assert state == full, batch
        check_references(full)
        assert full == fresh_state(current), batch
        # Removed objects are never also reported as changed, and created sets have no deltas.
        assert not set(delta.filter_chains_changed) & delta.filter_chains_removed
        assert not set(delta.ipsets_created) & set(delta.ipset_members_added)
        assert not set(delta.routes_added) & delta.routes_removed


def big_cluster():
    kvs = []
    kvs += [s.tier("default", 1_000_000), s.pool("10.0.0.0/16", ipip="Always")]
    for ns in ("a", "b"):
        kvs += s.namespace_profiles(ns) + s.service_account_profiles(ns)
    for n in range(1, 4):
        kvs.append(s.node(f"node-{n}", f"192.168.1.{n}/24"))
        kvs.append(s.block(f"10.0.{n}.0/26", f"node-{n}"))
    for i in range(30):
        node = f"node-{i % 3 + 1}"
        kvs.append(
            s.wep(node, "ab"[i % 2], f"p{i}", f"10.0.{i % 3 + 1}.{i + 2}", {"app": f"app{i % 5}"})
        )
    kvs.append(
        s.policy(
            "NetworkPolicy",
            "a",
            "db",
            "app == 'app0'",
            inbound=[{"action": "Allow", "src_selector": "app == 'app1'"}],
        )
    )
    kvs.append(
        s.policy(
            "NetworkPolicy",
            "a",
            "web",
            "app == 'app2'",
            inbound=[{"action": "Allow", "src_selector": "app == 'app3'"}],
        )
    )
    return kvs


def test_label_change_on_remote_endpoint_touches_only_ipset_members() -> None:
    kvs = big_cluster()
    engine = CalcEngine("node-1")
    engine.apply_updates(kvs)
    engine.flush()
    key, value = s.wep("node-2", "b", "p1", "10.0.2.3", {"app": "app3"})  # was app1
    engine.apply_updates([(key, value)])
    delta = engine.flush()
    app1 = next(n for n in engine.state().ipsets if n.startswith("cali40s:"))
    assert delta.filter_chains_changed == {} and not delta.filter_chains_removed
    assert not delta.routes_added and not delta.routes_removed
    removed = {n: m for n, m in delta.ipset_members_removed.items()}
    added = {n: m for n, m in delta.ipset_members_added.items()}
    assert sum(len(m) for m in removed.values()) == 1 and sum(len(m) for m in added.values()) == 1
    assert app1 in removed or app1 in added
    # A change that does not affect any selector produces an empty delta.
    value = dict(value, labels={**value["labels"], "unrelated": "x"})
    engine.apply_updates([(key, value)])
    assert engine.flush().empty


def test_local_endpoint_label_change_touches_its_chains_only() -> None:
    kvs = big_cluster()
    engine = CalcEngine("node-1")
    engine.apply_updates(kvs)
    engine.flush()
    before = engine.state()
    key, value = s.wep("node-1", "a", "p0", "10.0.1.2", {"app": "app2"})  # app0 → app2
    engine.apply_updates([(key, value)])
    delta = engine.flush()
    iface = s.iface_name("a", "p0")
    changed = set(delta.filter_chains_changed)
    assert changed <= {f"cali-tw-{iface}", f"cali-fw-{iface}", "cali-pi-np/a/web"}
    assert f"cali-tw-{iface}" in changed
    assert all(name in before.filter_chains or name == "cali-pi-np/a/web" for name in changed)
