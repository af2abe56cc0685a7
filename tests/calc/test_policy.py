"""Policy ordering and the reference evaluator (docs/felix-calc.md, "Policy resolution")."""

from __future__ import annotations

from felix_client.calc import synthetic as s
from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.objects import Action, PolicyId
from felix_client.calc.model.updates import parse_update
from felix_client.calc.model.values import api_default_types, parse_policy, parse_tier
from felix_client.calc.policy import EGRESS, INGRESS, resolve_tiers
from tests.calc.verdict import Packet, verdict


def pol(
    name, *, tier="default", order=None, kind="NetworkPolicy", ns="ns", types=("ingress",), **kw
):
    value = {"tier": tier, "selector": "all()", "types": list(types), **kw}
    if order is not None:
        value["order"] = order
    return parse_policy(PolicyId(kind, ns, name), value)


def tiers(**orders):
    return {
        name: parse_tier(name, {"order": o} if o is not None else {}) for name, o in orders.items()
    }


def names(tier_infos, direction=INGRESS):
    return [(t.name, [p.name for p in t.policies(direction)]) for t in tier_infos]


def test_tiers_sorted_by_order_missing_last_then_name() -> None:
    t = tiers(zeta=10, alpha=10, low=1, none_b=None, none_a=None)
    policies = [pol(n, tier=n) for n in ("zeta", "alpha", "low", "none_b", "none_a")]
    assert [ti.name for ti in resolve_tiers(policies, t)] == [
        "low",
        "alpha",
        "zeta",
        "none_a",
        "none_b",
    ]


def test_missing_tier_is_invalid_sorted_after_valid_and_drops() -> None:
    t = tiers(default=None)
    result = resolve_tiers(
        [pol("a", tier="ghost"), pol("b", tier="default"), pol("c", tier="aaa")], t
    )
    assert [(ti.name, ti.valid) for ti in result] == [
        ("default", True),
        ("aaa", False),
        ("ghost", False),
    ]
    assert all(ti.default_action is Action.DENY for ti in result)


def test_policy_order_missing_is_infinite_ties_by_name_namespace_kind() -> None:
    policies = [
        pol("b", order=5),
        pol("a", order=5),
        pol("none"),
        pol("first", order=1),
        pol("a", order=5, ns="aaa"),
        pol("a", order=5, ns="", kind="GlobalNetworkPolicy"),
        pol("float", order=4.5),
    ]
    result = resolve_tiers(policies, tiers(default=1))
    assert [(p.name, p.namespace) for p in result[0].ingress] == [
        ("first", "ns"),
        ("float", "ns"),
        # "a//GlobalNetworkPolicy" < "a/aaa/NetworkPolicy" < "a/ns/NetworkPolicy"
        ("a", ""),
        ("a", "aaa"),
        ("a", "ns"),
        ("b", "ns"),
        ("none", "ns"),
    ]


def test_types_filter_directions_and_empty_means_both() -> None:
    policies = [
        pol("in", types=("ingress",)),
        pol("out", types=("Egress",)),
        pol("both", types=("ingress", "egress")),
        pol("empty", types=()),
    ]
    result = resolve_tiers(policies, tiers(default=1))
    assert names(result, INGRESS) == [("default", ["both", "empty", "in"])]
    assert names(result, EGRESS) == [("default", ["both", "empty", "out"])]


def test_api_type_defaulting() -> None:
    assert api_default_types(False, False) == ("ingress",)
    assert api_default_types(True, False) == ("ingress",)
    assert api_default_types(False, True) == ("egress",)
    assert api_default_types(True, True) == ("ingress", "egress")


def test_staged_untracked_and_prednat_policies_do_not_apply_to_workloads() -> None:
    policies = [
        pol("staged", kind="StagedNetworkPolicy"),
        pol("untracked", untracked=True),
        pol("prednat", pre_dnat=True),
        pol("real"),
    ]
    assert names(resolve_tiers(policies, tiers(default=1))) == [("default", ["real"])]


def test_tier_default_action_pass() -> None:
    t = {"t": parse_tier("t", {"order": 1, "defaultAction": "Pass"})}
    assert resolve_tiers([pol("a", tier="t")], t)[0].default_action is Action.PASS


# --- Reference evaluator ---------------------------------------------------------------------


def model_of(kvs) -> ClusterModel:
    model = ClusterModel()
    for key, value in kvs:
        model.store(parse_update(key, value))
    return model


def base_kvs():
    kvs = [s.tier("default", 1_000_000), s.tier("security", 10, "Deny"), s.tier("pass", 5, "Pass")]
    kvs += s.namespace_profiles("p") + s.service_account_profiles("p")
    kvs.append(s.wep("n1", "p", "db", "10.0.0.1", {"app": "database"}))
    kvs.append(s.wep("n1", "p", "fe", "10.0.0.2", {"app": "frontend"}))
    kvs.append(s.wep("n2", "p", "other", "10.0.0.3", {"app": "other"}))
    return kvs


def db_of(model):
    return next(w for w in model.weps.values() if w.labels.get("app") == "database")


TCP = 6


def test_no_policy_falls_through_to_allowing_profile() -> None:
    model = model_of(base_kvs())
    assert (
        verdict(model, db_of(model), INGRESS, Packet("10.0.0.3", "10.0.0.1", TCP, 1, 2))
        is Action.ALLOW
    )


def test_end_of_tier_drop_and_allow() -> None:
    kvs = base_kvs()
    kvs.append(
        s.policy(
            "NetworkPolicy",
            "p",
            "allow-tcp-6379",
            "app == 'database'",
            inbound=[
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "src_selector": "app == 'frontend'",
                    "dst_ports": [6379],
                }
            ],
        )
    )
    model = model_of(kvs)
    db = db_of(model)
    assert (
        verdict(model, db, INGRESS, Packet("10.0.0.2", "10.0.0.1", TCP, 999, 6379)) is Action.ALLOW
    )
    assert (
        verdict(model, db, INGRESS, Packet("10.0.0.2", "10.0.0.1", TCP, 999, 6380)) is Action.DENY
    )
    assert (
        verdict(model, db, INGRESS, Packet("10.0.0.3", "10.0.0.1", TCP, 999, 6379)) is Action.DENY
    )
    # Egress is not governed: the profile allows.
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "8.8.8.8", TCP, 999, 53)) is Action.ALLOW


def test_pass_skips_to_next_tier_and_log_continues() -> None:
    kvs = base_kvs()
    kvs.append(
        s.policy(
            "GlobalNetworkPolicy",
            "",
            "sec",
            "app == 'database'",
            tier="security",
            order=1,
            inbound=[
                {"action": "Log"},
                {"action": "Deny", "src_selector": "app == 'other'"},
                {"action": "Pass", "src_selector": "app == 'frontend'"},
            ],
        )
    )
    kvs.append(
        s.policy(
            "GlobalNetworkPolicy",
            "",
            "sec-later",
            "app == 'database'",
            tier="security",
            order=2,
            inbound=[{"action": "Allow"}],
        )
    )
    kvs.append(
        s.policy(
            "NetworkPolicy", "p", "deny-all", "app == 'database'", inbound=[{"action": "Deny"}]
        )
    )
    model = model_of(kvs)
    db = db_of(model)
    # other: denied in tier security
    assert verdict(model, db, INGRESS, Packet("10.0.0.3", "10.0.0.1", TCP, 1, 2)) is Action.DENY
    # frontend: passed past sec-later, then denied in default
    assert verdict(model, db, INGRESS, Packet("10.0.0.2", "10.0.0.1", TCP, 1, 2)) is Action.DENY
    # external: sec does not decide, sec-later allows
    assert verdict(model, db, INGRESS, Packet("8.8.8.8", "10.0.0.1", TCP, 1, 2)) is Action.ALLOW


def test_tier_with_default_pass_continues_to_profiles() -> None:
    kvs = base_kvs()
    kvs.append(
        s.policy(
            "GlobalNetworkPolicy",
            "",
            "nothing-matches",
            "app == 'database'",
            tier="pass",
            inbound=[{"action": "Deny", "src_nets": ["1.2.3.4/32"]}],
        )
    )
    model = model_of(kvs)
    db = db_of(model)
    assert verdict(model, db, INGRESS, Packet("10.0.0.3", "10.0.0.1", TCP, 1, 2)) is Action.ALLOW
    assert verdict(model, db, INGRESS, Packet("1.2.3.4", "10.0.0.1", TCP, 1, 2)) is Action.DENY


def test_profiles_in_order_then_drop() -> None:
    kvs = [s.tier("default", 1)]
    kvs += [
        (
            "/calico/v1/policy/profile/first/rules",
            {"inbound_rules": [{"action": "Deny", "protocol": "UDP"}], "outbound_rules": []},
        ),
        (
            "/calico/v1/policy/profile/second/rules",
            {"inbound_rules": [{"action": "Allow", "protocol": "TCP"}], "outbound_rules": []},
        ),
    ]
    key, value = s.wep("n1", "p", "x", "10.0.0.9", {}, sa=None)
    value["profile_ids"] = ["first", "second", "missing"]
    kvs.append((key, value))
    model = model_of(kvs)
    ep = next(iter(model.weps.values()))
    assert verdict(model, ep, INGRESS, Packet("1.1.1.1", "10.0.0.9", TCP, 1, 2)) is Action.ALLOW
    assert verdict(model, ep, INGRESS, Packet("1.1.1.1", "10.0.0.9", 17, 1, 2)) is Action.DENY
    assert verdict(model, ep, INGRESS, Packet("1.1.1.1", "10.0.0.9", 1, icmp_type=8)) is Action.DENY
    assert verdict(model, ep, EGRESS, Packet("10.0.0.9", "1.1.1.1", TCP, 1, 2)) is Action.DENY


def test_named_ports_and_network_sets() -> None:
    kvs = base_kvs()
    kvs.append(
        s.wep(
            "n2",
            "p",
            "web",
            "10.0.0.4",
            {"app": "web"},
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        )
    )
    kvs.append(
        s.wep(
            "n2",
            "p",
            "web2",
            "10.0.0.5",
            {"app": "notweb"},
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        )
    )
    kvs.append(s.network_set("p/ext", ["172.16.0.0/16"], {"role": "external"}))
    kvs.append(
        s.policy(
            "NetworkPolicy",
            "p",
            "egress",
            "app == 'database'",
            types=("egress",),
            outbound=[
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "dst_selector": "app == 'web'",
                    "dst_ports": ["http"],
                },
                {"action": "Allow", "dst_selector": "role == 'external'"},
            ],
        )
    )
    model = model_of(kvs)
    db = db_of(model)
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "10.0.0.4", TCP, 1, 8080)) is Action.ALLOW
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "10.0.0.4", TCP, 1, 80)) is Action.DENY
    # Same named port on an endpoint the selector does not match.
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "10.0.0.5", TCP, 1, 8080)) is Action.DENY
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "172.16.3.3", 17, 1, 53)) is Action.ALLOW
    # VXLAN/IPIP from a workload is dropped before policy.
    assert verdict(model, db, EGRESS, Packet("10.0.0.1", "172.16.3.3", 17, 1, 4789)) is Action.DENY


def test_default_tier_between_admin_and_baseline_tiers() -> None:
    t = tiers(**{"kube-admin": 1000, "default": 1_000_000, "kube-baseline": 10_000_000, "x": None})
    policies = [pol(n, tier=n) for n in ("default", "kube-baseline", "x", "kube-admin")]
    assert [ti.name for ti in resolve_tiers(policies, t)] == [
        "kube-admin",
        "default",
        "kube-baseline",
        "x",
    ]
