"""KernelDataplane against a real kernel, inside namespaces the tests create: the state shows up
in ``iptables-save`` / ``ipset`` / ``ip route``; a delta touches only what it names; a failing
transaction leaves the previous chains intact; foreign rules, sets and routes are never touched.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import pytest
import trio

from felix_client.agent import NodeAgent
from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine
from felix_client.calc.ipsetspec import ipset_name
from felix_client.calc.selector import parse
from felix_client.calc.state import DataplaneDelta
from felix_client.calc.synthetic import iface_name
from felix_client.dataplane import DataplaneError, KernelDataplane, host_spec
from tests.dataplane import sample
from tests.dataplane.nstools import (
    NetnsPool,
    foreign_lines,
    ipset_members,
    iptables_save,
    ns_out,
    nsrun,
    routes,
    veth,
)
from typha.protocol import SyncStatus

pytestmark = pytest.mark.netns

DB_IF = iface_name("myproject", "database")
OTHER_IF = iface_name("myproject", "other")


def engine_for(kvs: Iterable[tuple[str, object]]) -> CalcEngine:
    engine = CalcEngine(sample.NODE)
    engine.apply_updates(kvs)
    engine.snapshot_done()
    engine.flush()
    return engine


def node_with_pods(netns: NetnsPool, *pods: str) -> str:
    """A node namespace with an uplink (10.0.0.1/24) and a veth per named pod."""
    node = netns.create("n1")
    peer = netns.create("peer")
    veth(node, "eth0", peer, "uplink")
    nsrun(node, "ip", "addr", "add", "10.0.0.1/24", "dev", "eth0")
    for pod in pods:
        veth(node, iface_name("myproject", pod), peer, f"e{pod[:6]}", mac_a="ee:ee:ee:ee:ee:ee")
    return node


def chains_in(save: str, table: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in save.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(":"):
            out.setdefault(line[1:].split()[0], [])
        elif current == table and line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            out.setdefault(chain, []).append(rule)
    return out


def diff_lines(a: str, b: str) -> list[str]:
    return [
        x
        for x in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if x[:1] in "+-" and not x.startswith(("+++", "---"))
    ]


def norm_members(members: Iterable[str]) -> set[str]:
    return {m.removesuffix("/32") for m in members}


async def test_state_is_programmed_and_visible(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database")  # "other" has no veth yet
    engine = engine_for(sample.sample_kvs("vxlan"))
    state, host = engine.state(), host_spec(engine.model, sample.NODE)
    dp = KernelDataplane(node)
    try:
        await dp.resync(state, host)
        save = iptables_save(node)
        filt, nat = chains_in(save, "filter"), chains_in(save, "nat")
        for name, rules in state.filter_chains.items():
            assert name in filt, name
            assert len(filt[name]) == len(rules), name
        assert set(state.nat_chains) <= set(nat)
        # The hooks, exactly once each.
        assert filt["INPUT"].count('-m comment --comment "cali:hook" -j cali-INPUT') == 1
        assert filt["FORWARD"][0] == '-m comment --comment "cali:hook" -j cali-FORWARD'
        assert nat["POSTROUTING"] == ['-m comment --comment "cali:hook" -j cali-POSTROUTING']
        sets = ipset_members(node)
        for name, ipset in state.ipsets.items():
            assert norm_members(sets[name]) == norm_members(ipset.members), name
        shown = routes(node)
        assert "blackhole 10.65.0.0/26 proto 80" in shown
        assert f"{sample.DB_IP} dev {DB_IF} scope link" in shown
        assert "10.65.1.0/26 via 10.65.1.1 dev vxlan.calico onlink mtu 1410" in shown
        # The VXLAN device with its VTEP neighbour and FDB entry.
        link = ns_out(node, "ip", "-d", "link", "show", "vxlan.calico")
        assert "vxlan id 4096 local 10.0.0.1" in link and "66:00:00:00:00:01" in link
        assert "mtu 1450" in link  # parent eth0's 1500 minus the VXLAN overhead
        assert "10.65.0.1/32" in ns_out(node, "ip", "addr", "show", "vxlan.calico")
        assert "10.65.1.1 dev vxlan.calico lladdr 66:00:00:00:00:02 PERMANENT" in ns_out(
            node, "ip", "neigh"
        )
        assert "66:00:00:00:00:02 dst 10.0.0.2 self permanent" in ns_out(
            node, "bridge", "fdb", "show", "dev", "vxlan.calico"
        )
        # Felix's per-interface sysctls on the workload interface.
        assert ns_out(node, "sysctl", "-n", f"net.ipv4.conf.{DB_IF}.proxy_arp").strip() == "1"
        assert ns_out(node, "sysctl", "-n", f"net.ipv4.neigh.{DB_IF}.proxy_delay").strip() == "0"
        # The other pod's interface does not exist yet: its route waits, the apply succeeded.
        assert dp.pending_work() and dp.stats.routes_pending == 1
        assert not any(sample.OTHER_IP in r for r in routes(node))
        veth(node, OTHER_IF, netns.create("peer2"), "eth0", mac_a="ee:ee:ee:ee:ee:ee")
        await dp.retry_pending()
        assert not dp.pending_work()
        assert f"{sample.OTHER_IP} dev {OTHER_IF} scope link" in routes(node)
        # Resync is idempotent: nothing changes the second time.
        before = iptables_save(node), routes(node), ipset_members(node)
        await dp.resync(state, host)
        assert (iptables_save(node), routes(node), ipset_members(node)) == before
    finally:
        await dp.aclose()


async def test_incremental_delta_changes_only_what_it_touches(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database", "other")
    engine = engine_for(sample.sample_kvs())
    dp = KernelDataplane(node)
    try:
        await dp.resync(engine.state(), host_spec(engine.model, sample.NODE))
        save0, routes0, sets0 = iptables_save(node), routes(node), ipset_members(node)
        restores0 = dp.stats.iptables_restore_calls

        # A remote pod leaves the frontend set: one ipset member, nothing else.
        engine.apply_updates([sample.frontend_wep({"app": "other"})])
        delta = engine.flush()
        await dp.apply(delta, engine.state(), host_spec(engine.model, sample.NODE))
        save1, routes1, sets1 = iptables_save(node), routes(node), ipset_members(node)
        assert save1 == save0 and routes1 == routes0
        assert dp.stats.iptables_restore_calls == restores0  # iptables was not even called
        changed = {n for n in sets0 if sets0[n] != sets1.get(n)}
        assert len(changed) == 1
        (name,) = changed
        assert sets0[name] - sets1[name] == {sample.FRONTEND_IP}

        # Positive control: a local pod's label change rewrites that pod's chains, and only
        # those, in a single iptables-restore.
        engine.apply_updates([sample.other_wep({"app": "database"})])
        delta = engine.flush()
        assert set(delta.filter_chains_changed) == {f"cali-tw-{OTHER_IF}", f"cali-fw-{OTHER_IF}"}
        await dp.apply(delta, engine.state(), host_spec(engine.model, sample.NODE))
        assert dp.stats.iptables_restore_calls == restores0 + 1
        diff = diff_lines(save1, iptables_save(node))
        assert diff and all(OTHER_IF in line for line in diff), diff
        assert routes(node) == routes1
    finally:
        await dp.aclose()


async def test_failed_transaction_leaves_previous_chains_intact(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database", "other")
    engine = engine_for(sample.sample_kvs())
    state, host = engine.state(), host_spec(engine.model, sample.NODE)
    dp = KernelDataplane(node)
    try:
        await dp.resync(state, host)
        before = iptables_save(node)
        good = {"cali-wl-to-host": ("-j cali-from-wl-dispatch", "-j ACCEPT")}
        bad = {"cali-pi-broken": ("-m set --match-set cali40s:no-such-set src -j ACCEPT",)}
        with pytest.raises(DataplaneError, match="no-such-set"):
            await dp.apply(DataplaneDelta(filter_chains_changed={**good, **bad}), state, host)
        assert dp.stats.iptables_restore_errors == 1
        # All or nothing: the valid change in the same transaction did not happen either.
        assert iptables_save(node) == before
        # Positive control: the valid change alone goes through.
        await dp.apply(DataplaneDelta(filter_chains_changed=good), state, host)
        assert chains_in(iptables_save(node), "filter")["cali-wl-to-host"][-1] == "-j ACCEPT"
        # A resync puts back exactly the desired state.
        await dp.resync(state, host)
        assert iptables_save(node) == before
    finally:
        await dp.aclose()


async def test_foreign_rules_sets_and_routes_are_untouched(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database", "other")
    nsrun(
        node,
        "iptables-restore",
        "--noflush",
        input="*filter\n:MY-CHAIN - [0:0]\n-A MY-CHAIN -s 192.168.50.0/24 -j DROP\n"
        "-A INPUT -p tcp --dport 22 -j ACCEPT\n-A FORWARD -j MY-CHAIN\n"
        # A stale chain of ours (a previous run's): resync must remove it.
        ":cali-stale - [0:0]\n-A cali-stale -j DROP\nCOMMIT\n"
        "*nat\n-A POSTROUTING -s 192.168.50.0/24 -j MASQUERADE\nCOMMIT\n",
    )
    nsrun(
        node,
        "ipset",
        "restore",
        input="create myset hash:ip\nadd myset 192.0.2.7\ncreate cali40s:stale hash:net\nCOMMIT\n",
    )
    nsrun(node, "ip", "route", "add", "10.99.0.0/24", "via", "10.0.0.254", "proto", "static")
    nsrun(node, "ip", "route", "add", "blackhole", "10.98.0.0/24")
    nsrun(node, "ip", "route", "add", "blackhole", "10.77.0.0/26", "proto", "80")  # stale, ours
    foreign0 = foreign_lines(iptables_save(node))
    sets0 = ipset_members(node)
    routes0 = routes(node)

    engine = engine_for(sample.sample_kvs())
    dp = KernelDataplane(node)
    try:
        await dp.resync(engine.state(), host_spec(engine.model, sample.NODE))
        save = iptables_save(node)
        assert foreign_lines(save) == [x for x in foreign0 if "cali-stale" not in x]
        assert ":cali-stale" not in save  # ours and unwanted: removed (positive control)
        filt = chains_in(save, "filter")
        assert filt["INPUT"][0].endswith("-j cali-INPUT")  # hook inserted on top ...
        assert filt["INPUT"][1] == "-p tcp -m tcp --dport 22 -j ACCEPT"  # ... foreign rule kept
        sets = ipset_members(node)
        assert sets["myset"] == sets0["myset"] and "cali40s:stale" not in sets
        shown = routes(node)
        assert "10.99.0.0/24 via 10.0.0.254 dev eth0 proto static" in shown
        assert "blackhole 10.98.0.0/24" in shown
        assert "blackhole 10.77.0.0/26 proto 80" not in shown  # ours and unwanted: removed

        # Incremental changes, then removal of everything: foreign objects never move.
        engine.apply_updates([sample.other_wep({"app": "database"})])
        await dp.apply(engine.flush(), engine.state(), host_spec(engine.model, sample.NODE))
        engine.apply_updates([(k, None) for k, _ in sample.sample_kvs()])
        delta = engine.flush()
        assert delta.routes_removed and delta.filter_chains_removed
        await dp.apply(delta, engine.state(), host_spec(engine.model, sample.NODE))
        assert foreign_lines(iptables_save(node)) == [x for x in foreign0 if "cali-stale" not in x]
        assert ipset_members(node)["myset"] == sets0["myset"]
        assert [r for r in routes(node) if "proto 80" not in r and "cali" not in r] == [
            r for r in routes0 if "proto 80" not in r
        ]
        assert not any(sample.DB_IP in r for r in routes(node))
    finally:
        await dp.aclose()


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)


async def test_agent_counts_a_failed_apply_and_recovers_with_a_full_resync(
    netns: NetnsPool,
) -> None:
    node = node_with_pods(netns, "database", "other")
    new_policy = s.policy(
        "NetworkPolicy",
        "myproject",
        "from-newsel",
        "app == 'database'",
        inbound=[{"action": "Allow", "src_selector": "app == 'newsel'"}],
    )
    newsel_set = ipset_name(parse("app == 'newsel'").uid)
    agent = NodeAgent(
        sample.NODE, netns=node, metrics_port=0, retry_base=1.0, pending_retry_interval=0.1
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        agent.on_updates(sample.sample_kvs())
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        assert agent.failures == 0 and agent.resyncs == 1
        before = iptables_save(node)
        # Sabotage: a foreign set squats the name the new policy's selector needs, with
        # another type, so the ipset session of the next apply fails.
        nsrun(node, "ipset", "create", newsel_set, "hash:ip")
        agent.on_updates([new_policy])
        await wait_for(lambda: agent.failures == 1)
        assert agent.failing
        assert agent.metrics.value("felix_int_dataplane_failures_total") == 1
        assert agent.metrics.value("felix_ipset_errors_total") == 1
        # Nothing half-written: the chains are exactly as before the failed apply.
        assert iptables_save(node) == before
        assert newsel_set not in before
        # The retry (after the 1 s backoff) is a full resync: it replaces the squatter, whose
        # type is wrong and which nothing references, and programs the new policy.
        await agent.wait_applied(timeout=10)
        assert agent.failures == 1 and agent.resyncs == 2
        assert "hash:net" in ns_out(node, "ipset", "list", "-t", newsel_set)
        assert f"-m set --match-set {newsel_set} src" in iptables_save(node)
        nursery.cancel_scope.cancel()


async def test_agent_route_waits_for_the_workload_interface(netns: NetnsPool) -> None:
    node = node_with_pods(netns, "database")
    agent = NodeAgent(sample.NODE, netns=node, metrics_port=0, pending_retry_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        agent.on_updates(sample.sample_kvs())
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        assert agent.failures == 0
        assert agent.metrics.value("felix_route_table_pending_routes") == 1
        assert not any(sample.OTHER_IP in r for r in routes(node))
        # The CNI creates the interface later; the route follows without any new update.
        veth(node, OTHER_IF, netns.create("peer2"), "eth0", mac_a="ee:ee:ee:ee:ee:ee")
        await wait_for(lambda: any(sample.OTHER_IP in r for r in routes(node)), timeout=5)
        assert agent.failures == 0
        nursery.cancel_scope.cancel()
