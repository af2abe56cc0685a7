"""Network-namespace plumbing for the dataplane tests.

Every namespace a test creates is named ``tpy-<random>-<suffix>`` and deleted by the
``NetnsPool`` that made it (with any process still running inside it), so the host's own
namespace — its routes, iptables rules and ipsets — is never touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence


def can_use_netns() -> str | None:
    """``None`` if namespaces can be created here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "ipset", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def run(
    args: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure raises with its stderr in the message."""
    proc = subprocess.run(
        list(args), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
        )
    return proc


def nsrun(
    ns: str, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *args], input=input, check=check)


def ns_out(ns: str, *args: str) -> str:
    return nsrun(ns, *args).stdout


class NetnsPool:
    """Creates uniquely named namespaces and deletes them all in ``cleanup``."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.names: list[str] = []

    def create(self, suffix: str, *, lo_up: bool = True) -> str:
        name = f"tpy-{self.tag}-{suffix}"
        run(["ip", "netns", "add", name])
        self.names.append(name)
        if lo_up:
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def cleanup(self) -> None:
        for name in reversed(self.names):
            # Processes our tests started inside the namespace (servers, probers) are killed by
            # the tests themselves; any left over would keep the namespace alive.
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", name], check=False)
        self.names.clear()


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, *, mac_a: str | None = None) -> None:
    """A veth pair with one end in each namespace, both up."""
    tmp_a = "t" + secrets.token_hex(5)
    tmp_b = "t" + secrets.token_hex(5)
    run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
    run(["ip", "link", "set", tmp_a, "netns", ns_a, "name", name_a])
    run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", name_b])
    if mac_a:
        run(["ip", "-n", ns_a, "link", "set", name_a, "address", mac_a])
    run(["ip", "-n", ns_a, "link", "set", name_a, "up"])
    run(["ip", "-n", ns_b, "link", "set", name_b, "up"])


def iptables_save(ns: str) -> str:
    """iptables-save without the timestamp comments and packet counters."""
    lines = []
    for line in ns_out(ns, "iptables-save").splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            line = line.split(" [")[0]
        lines.append(line)
    return "\n".join(lines) + "\n"


def foreign_lines(save: str) -> list[str]:
    """The lines of an ``iptables_save`` that are not ours (ours: cali-* chains and hooks)."""
    out = []
    for line in save.splitlines():
        if line.startswith((":cali-", "-A cali-")) or "cali:hook" in line:
            continue
        out.append(line)
    return out


def ipset_members(ns: str) -> dict[str, set[str]]:
    """{set name: members} from ``ipset save``."""
    sets: dict[str, set[str]] = {}
    for line in ns_out(ns, "ipset", "save").splitlines():
        parts = line.split()
        if parts[:1] == ["create"]:
            sets[parts[1]] = set()
        elif parts[:1] == ["add"]:
            sets[parts[1]].add(parts[2])
    return sets


def routes(ns: str) -> list[str]:
    return [line.strip() for line in ns_out(ns, "ip", "route", "show").splitlines()]
