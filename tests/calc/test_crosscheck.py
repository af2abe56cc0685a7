"""Rendered iptables rules, run through a simulator, give the reference evaluator's verdicts."""

from __future__ import annotations

import random

import pytest

from felix_client.calc import synthetic as s
from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.objects import Action
from felix_client.calc.model.updates import parse_update
from tests.calc.iptsim import IpsetSim, IptablesSim, SimPacket
from tests.calc.randcluster import LOCAL, rand_cluster, rand_packet
from tests.calc.verdict import EGRESS, INGRESS, Packet, verdict
from typha.model import keys


def model_of(kvs) -> ClusterModel:
    model = ClusterModel()
    for key, value in kvs:
        model.store(parse_update(key, value))
    return model


def sim_packet(packet: Packet, **where: str) -> SimPacket:
    """``packet`` as the iptables simulator takes it (``iif``/``oif`` for forwarded ones)."""
    return SimPacket(
        packet.src_ip,
        packet.dst_ip,
        packet.protocol,
        packet.src_port,
        packet.dst_port,
        packet.icmp_type,
        packet.icmp_code,
        **where,
    )


def simulate(sim: IptablesSim, iface: str, direction: str, packet: Packet) -> Action:
    pkt = sim_packet(packet)
    chain = ("cali-tw-" if direction == INGRESS else "cali-fw-") + iface
    result = sim.run(chain, pkt)
    if result == "DROP":
        return Action.DENY
    assert result is None, result
    assert pkt.mark & 0x10000, "endpoint chain returned without the accept mark"
    return Action.ALLOW


def simulate_forward(sim: IptablesSim, packet: Packet, iif: str, oif: str) -> Action:
    pkt = sim_packet(packet, iif=iif, oif=oif)
    result = sim.run("cali-FORWARD", pkt)
    assert result in ("ACCEPT", "DROP"), result
    return Action.ALLOW if result == "ACCEPT" else Action.DENY


def build(kvs):
    engine = CalcEngine(LOCAL)
    engine.apply_updates(kvs)
    engine.snapshot_done()
    engine.flush()
    files = render_files(engine.state())
    ipsets = IpsetSim(files["ipsets"])
    return engine, IptablesSim(files["iptables-filter"], ipsets)


@pytest.mark.parametrize("seed", range(120))
def test_rendered_rules_match_reference_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    kvs = rand_cluster(rng, n_weps=rng.randrange(3, 10), n_policies=rng.randrange(1, 8))
    _engine, sim = build(kvs)
    model = model_of(kvs)
    local = [w for w in model.weps.values() if w.host == LOCAL]
    ips = [w.ipv4_addrs[0] for w in model.weps.values()]
    checked = 0
    for endpoint in local:
        for direction in (INGRESS, EGRESS):
            for _ in range(25):
                packet = rand_packet(rng, ips, endpoint.ipv4_addrs[0], direction == INGRESS)
                expected = verdict(model, endpoint, direction, packet)
                got = simulate(sim, endpoint.iface, direction, packet)
                assert got == expected, (seed, endpoint.key, direction, packet)
                checked += 1
    assert checked == len(local) * 50


@pytest.mark.parametrize("seed", range(40))
def test_forward_path_between_local_workloads(seed: int) -> None:
    """Pod-to-pod on one host passes the sender's egress and the receiver's ingress chains."""
    rng = random.Random(1000 + seed)
    kvs = rand_cluster(rng, n_weps=6, n_policies=rng.randrange(1, 6))
    _engine, sim = build(kvs)
    model = model_of(kvs)
    local = [w for w in model.weps.values() if w.host == LOCAL]
    if len(local) < 2:
        pytest.skip("needs two local workloads")
    for _ in range(40):
        a, b = rng.sample(local, 2)
        packet = rand_packet(rng, [], a.ipv4_addrs[0], ingress=False)
        packet = Packet(a.ipv4_addrs[0], b.ipv4_addrs[0], *packet_fields(packet))
        expected = Action.ALLOW
        if (
            verdict(model, a, EGRESS, packet) is Action.DENY
            or verdict(model, b, INGRESS, packet) is Action.DENY
        ):
            expected = Action.DENY
        assert simulate_forward(sim, packet, a.iface, b.iface) == expected


def packet_fields(p: Packet) -> tuple:
    return (p.protocol, p.src_port, p.dst_port, p.icmp_type, p.icmp_code)


def test_unknown_interface_is_dropped() -> None:
    kvs = rand_cluster(random.Random(5), n_weps=4, n_policies=2)
    _, sim = build(kvs)
    pkt = SimPacket("10.0.1.2", "8.8.8.8", 6, 1234, 80, iif="caliunknown0", oif="eth0")
    assert sim.run("cali-FORWARD", pkt) == "DROP"
    # Traffic not involving workloads is left to the kernel chains.
    pkt = SimPacket("192.168.1.2", "8.8.8.8", 6, 1234, 80, iif="eth0", oif="eth1")
    assert sim.run("cali-FORWARD", pkt) is None


@pytest.mark.parametrize("action", ["ACCEPT", "DROP", "RETURN", None])
def test_workload_to_host_applies_egress_policy_then_configured_action(action) -> None:
    kvs = [*s.namespace_profiles("ns"), s.wep(LOCAL, "ns", "a", "10.0.1.2", {"app": "a"})]
    kvs.append(
        s.policy(
            "NetworkPolicy",
            "ns",
            "no-udp",
            "app == 'a'",
            types=("egress",),
            outbound=[{"action": "Deny", "protocol": "UDP"}, {"action": "Allow"}],
        )
    )
    if action is not None:
        kvs.append((keys.global_config_key("DefaultEndpointToHostAction"), action))
    _, sim = build(kvs)
    iface = s.iface_name("ns", "a")
    tcp = SimPacket("10.0.1.2", "192.168.1.1", 6, 1000, 22, iif=iface)
    udp = SimPacket("10.0.1.2", "192.168.1.1", 17, 1000, 53, iif=iface)
    expected = {"ACCEPT": "ACCEPT", "DROP": "DROP", "RETURN": None, None: "DROP"}[action]
    assert sim.run("cali-INPUT", tcp) == expected
    assert sim.run("cali-INPUT", udp) == "DROP"  # egress policy applies before the host action
