"""The dry-run files are valid input for the real tools: ``ipset restore`` and
``iptables-restore --test`` accept them in a scratch namespace, for each pool encapsulation —
including IPIP, which this kernel cannot create (no ``ipip`` link type), so the dry run is the
only place its rules can be checked."""

from __future__ import annotations

import pytest

from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.synthetic import iface_name
from tests.dataplane import sample
from tests.dataplane.nstools import NetnsPool, ipset_members, iptables_save, nsrun, routes, veth

pytestmark = pytest.mark.netns


def rendered(encap: str) -> dict[str, str]:
    engine = CalcEngine(sample.NODE)
    engine.apply_updates(sample.sample_kvs(encap))
    engine.snapshot_done()
    engine.flush()
    return render_files(engine.state())


@pytest.mark.parametrize("encap", ["none", "ipip", "vxlan"])
def test_rendered_files_pass_ipset_restore_and_iptables_restore_test(
    netns: NetnsPool, encap: str
) -> None:
    files = rendered(encap)
    if encap == "ipip":
        # The IPIP-specific rules are there to be checked.
        assert "-p 4 -m set --match-set cali40all-hosts-net src" in files["iptables-filter"]
        assert "-o tunl0 -m addrtype ! --src-type LOCAL" in files["iptables-nat"]
        assert "10.65.1.0/26 via 10.0.0.2 dev tunl0 onlink proto 80" in files["routes"]
    scratch = netns.create("scratch")
    nsrun(scratch, "ipset", "restore", input=files["ipsets"])
    sets = ipset_members(scratch)
    assert sets["cali40network-ip-pools"] == {sample.POOL}
    assert any(name.startswith("cali40n:") for name in sets)  # the named-port set
    for table in ("filter", "nat"):
        nsrun(scratch, "iptables-restore", "--noflush", "--test", input=files[f"iptables-{table}"])
    # --test commits nothing ...
    assert ":cali-" not in iptables_save(scratch)
    # ... while the same input without --test does.
    nsrun(scratch, "iptables-restore", "--noflush", input=files["iptables-filter"])
    assert ":cali-FORWARD" in iptables_save(scratch)


def test_iptables_restore_test_rejects_a_broken_file(netns: NetnsPool) -> None:
    """Positive control for the test above: --test really validates (a rule that references a
    set that does not exist is refused)."""
    files = rendered("ipip")
    scratch = netns.create("scratch")
    nsrun(scratch, "ipset", "restore", input=files["ipsets"])
    broken = files["iptables-filter"].replace("cali40all-hosts-net", "cali40no-such-set", 1)
    result = nsrun(scratch, "iptables-restore", "--noflush", "--test", input=broken, check=False)
    assert result.returncode != 0
    assert "cali40no-such-set" in result.stderr


def test_rendered_routes_are_accepted_by_ip_route(netns: NetnsPool) -> None:
    """The ``routes`` file (unencapsulated pool) replayed with ``ip -batch`` in a namespace that
    has the workload interfaces and the node's uplink."""
    files = rendered("none")
    scratch = netns.create("scratch")
    peer = netns.create("peer")
    for pod in ("database", "other"):
        veth(scratch, iface_name("myproject", pod), peer, f"e{pod[:5]}")
    veth(scratch, "eth0", peer, "uplink")
    nsrun(scratch, "ip", "addr", "add", "10.0.0.1/24", "dev", "eth0")
    batch = "".join(f"route add {line}\n" for line in files["routes"].splitlines())
    nsrun(scratch, "ip", "-batch", "-", input=batch)
    shown = routes(scratch)
    assert "blackhole 10.65.0.0/26 proto 80" in shown
    assert "10.65.1.0/26 via 10.0.0.2 dev eth0 proto 80" in shown
    assert f"{sample.DB_IP} dev {iface_name('myproject', 'database')} scope link" in shown
