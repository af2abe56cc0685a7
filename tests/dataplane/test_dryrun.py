"""DryRunDataplane through the NodeAgent: the files appear, are replaced atomically, and a label
change rewrites only the lines (and files) it concerns."""

from __future__ import annotations

import difflib
import os
import threading
from pathlib import Path

import trio

from felix_client.agent import NodeAgent
from felix_client.calc.engine import render_files
from felix_client.calc.synthetic import iface_name
from felix_client.dataplane.dryrun import FILES
from tests.dataplane import sample
from typha.protocol import SyncStatus


async def start_agent(nursery: trio.Nursery, directory: Path, **kwargs: object) -> NodeAgent:
    agent = NodeAgent(sample.NODE, dry_run_dir=directory, metrics_port=0, **kwargs)  # type: ignore[arg-type]
    await nursery.start(agent.run)
    return agent


def read_all(directory: Path) -> dict[str, str]:
    return {name: (directory / name).read_text() for name in FILES}


def stat_all(directory: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for name in FILES:
        st = os.stat(directory / name)
        out[name] = (st.st_ino, st.st_mtime_ns)
    return out


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


async def test_files_appear_only_after_in_sync_and_match_the_rendered_state(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        agent = await start_agent(nursery, tmp_path)
        agent.on_status(SyncStatus.RESYNC)
        agent.on_updates(sample.sample_kvs())
        await trio.sleep(0.1)
        # Negative: mid-snapshot nothing is written (Felix applies only once in sync) ...
        assert not any((tmp_path / f).exists() for f in FILES)
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        # ... positive: once in sync, every file exists with the full rendered state.
        files = read_all(tmp_path)
        expected = render_files(agent.engine.state())
        for name in ("ipsets", "iptables-filter", "iptables-nat", "routes", "neighbours"):
            assert files[name] == expected[name], name
        assert files["devices"] == ""  # no VXLAN pool in this sample
        assert "-A cali-pi-" in files["iptables-filter"]
        assert f"{sample.DB_IP}/32 dev {iface_name('myproject', 'database')}" in files["routes"]
        assert sorted(os.listdir(tmp_path)) == sorted(FILES)  # no temp files left behind
        assert agent.metrics.value("felix_resync_state") == 3
        nursery.cancel_scope.cancel()


async def test_vxlan_pool_writes_device_and_vtep_entries(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        agent = await start_agent(nursery, tmp_path)
        agent.on_updates(sample.sample_kvs("vxlan"))
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        files = read_all(tmp_path)
        assert files["devices"].startswith("vxlan.calico vxlan id 4096 dstport 4789 local 10.0.0.1")
        assert "neigh 10.65.1.1 lladdr 66:00:00:00:00:02 dev vxlan.calico" in files["neighbours"]
        assert "fdb 66:00:00:00:00:02 dev vxlan.calico dst 10.0.0.2" in files["neighbours"]
        assert "10.65.1.0/26 via 10.65.1.1 dev vxlan.calico onlink mtu 1410" in files["routes"]
        nursery.cancel_scope.cancel()


async def test_files_are_replaced_atomically(tmp_path: Path) -> None:
    """A reader polling the files while 40 updates are applied never sees a partial file."""
    torn: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for name, head in (("iptables-filter", "*filter\n"), ("ipsets", "create ")):
                try:
                    text = (tmp_path / name).read_text()
                except FileNotFoundError:
                    continue
                reads += 1
                if not (text.startswith(head) and text.endswith("COMMIT\n")):
                    torn.append(text[-200:])

    async with trio.open_nursery() as nursery:
        agent = await start_agent(nursery, tmp_path)
        agent.on_updates(sample.sample_kvs())
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        # Keep the first version open: a file replaced by rename keeps its old inode (and
        # content) alive for us; one rewritten in place would change under our feet.
        old = open(tmp_path / "ipsets")  # noqa: SIM115
        old_text = old.read()
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            for i in range(40):
                # Alternate the remote frontend's label: its IP leaves and rejoins a set.
                labels = {"app": "frontend" if i % 2 else "other"}
                agent.on_updates([sample.frontend_wep(labels)])
                await agent.wait_applied()
        finally:
            stop.set()
            await trio.to_thread.run_sync(thread.join)
        assert reads > 0
        assert torn == []
        # Replaced by rename (a new inode), never rewritten in place.
        try:
            assert os.fstat(old.fileno()).st_ino != os.stat(tmp_path / "ipsets").st_ino
            old.seek(0)
            assert old.read() == old_text
        finally:
            old.close()
        assert sorted(os.listdir(tmp_path)) == sorted(FILES)
        nursery.cancel_scope.cancel()


async def test_label_change_rewrites_only_the_relevant_lines(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        agent = await start_agent(nursery, tmp_path)
        agent.on_updates(sample.sample_kvs())
        agent.on_status(SyncStatus.IN_SYNC)
        await agent.wait_applied()
        before, stats_before = read_all(tmp_path), stat_all(tmp_path)

        # A remote pod stops being a frontend: one member leaves the frontend selector's set.
        agent.on_updates([sample.frontend_wep({"app": "other"})])
        await agent.wait_applied()
        after, stats_after = read_all(tmp_path), stat_all(tmp_path)
        diff = changed_lines(before["ipsets"], after["ipsets"])
        assert len(diff) == 1 and diff[0].startswith("-add cali40s:")
        assert diff[0].endswith(f" {sample.FRONTEND_IP}/32")
        for name in FILES:
            if name != "ipsets":
                # Not even rewritten: same inode and mtime.
                assert stats_after[name] == stats_before[name], name
                assert after[name] == before[name]

        # Positive control: a *local* pod's label change does reach the chains — and only the
        # lines of that pod's endpoint chains.
        before, stats_before = after, stats_after
        agent.on_updates([sample.other_wep({"app": "database"})])
        await agent.wait_applied()
        after = read_all(tmp_path)
        diff = changed_lines(before["iptables-filter"], after["iptables-filter"])
        assert diff, "the local label change must change the filter chains"
        other_iface = iface_name("myproject", "other")
        assert all(f"cali-tw-{other_iface}" in d or f"cali-fw-{other_iface}" in d for d in diff), (
            diff
        )
        # The pod has no 'redis' port and the frontend set is unchanged: no ipset line moves.
        assert stat_all(tmp_path)["ipsets"] == stats_before["ipsets"]
        assert after["routes"] == before["routes"]
        nursery.cancel_scope.cancel()
