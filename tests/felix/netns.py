"""Namespaces for the Felix tests: a control namespace (etcd, the Typhas) and a node namespace
(Felix), joined by a veth; nothing gets an address in the root namespace.

Names are ``tpyfx-<pytest pid>-<random>-<role>`` so `reap_leftovers` can delete what a killed run
left behind (its pid is gone) without touching a namespace of a run still going.  The test process
reaches the peers' loopback listeners (health, etcd writes) by entering the control namespace on
one thread with setns(2) for the duration of a call (`entered`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

from tests.dataplane.nstools import run

PREFIX = "tpyfx-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-\w+$")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body on this thread inside network namespace `ns` (sockets made here stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _kill_and_delete(name: str) -> None:
    # A process left inside (Felix, etcd) would keep the namespace and its veths alive.
    for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", name], check=False)


def reap_leftovers() -> list[str]:
    """Delete the Felix-test namespaces of runs whose pytest process no longer exists."""
    reaped = []
    netns_dir = Path("/var/run/netns")
    names = [p.name for p in netns_dir.iterdir()] if netns_dir.is_dir() else []
    for name in names:
        m = _NAME.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_and_delete(name)
            reaped.append(name)
    return reaped


class FelixNetns:
    """Creates this test's namespaces under one unique prefix and deletes them all in `cleanup`."""

    def __init__(self) -> None:
        self.prefix = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        self.names: list[str] = []

    def create(self, role: str) -> str:
        name = self.prefix + role
        run(["ip", "netns", "add", name])
        self.names.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def delete(self, name: str) -> None:
        _kill_and_delete(name)
        self.names.remove(name)

    def cleanup(self) -> None:
        for name in reversed(self.names):
            _kill_and_delete(name)
        self.names.clear()
