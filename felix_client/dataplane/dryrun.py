"""A backend that programs nothing and keeps a directory of files describing the full state.

Files (all rewritten atomically — written to a temporary name in the same directory, then
``os.replace``d — so a reader sees either the old or the new content, never a mix):

* ``ipsets`` — ``ipset restore`` input that creates every set with its members;
* ``iptables-filter``, ``iptables-nat`` — ``iptables-restore --noflush`` input declaring and
  filling every ``cali-*`` chain (feed them to ``iptables-restore --test`` to validate);
* ``routes`` — one ``ip route`` line per route;
* ``neighbours`` — VXLAN ARP and FDB entries (``ip neigh`` / ``bridge fdb`` syntax);
* ``devices`` — the tunnel device this node would create (empty when none).

After an incremental ``apply`` only the files whose section the delta touches are rewritten, so
a label change that alters one ipset leaves the chain files untouched (same inode, same mtime).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from felix_client.calc.render.text import (
    ipset_restore_full,
    iptables_restore,
    neighbours_text,
    routes_text,
)
from felix_client.calc.state import DataplaneDelta, DataplaneState
from felix_client.dataplane.base import NO_HOST, DataplaneStats, HostSpec

FILES = ("ipsets", "iptables-filter", "iptables-nat", "routes", "neighbours", "devices")

_RENDERERS: dict[str, Callable[[DataplaneState, HostSpec], str]] = {
    "ipsets": lambda s, h: ipset_restore_full(s.ipsets),
    "iptables-filter": lambda s, h: iptables_restore("filter", s.filter_chains),
    "iptables-nat": lambda s, h: iptables_restore("nat", s.nat_chains),
    "routes": lambda s, h: routes_text(s.routes),
    "neighbours": lambda s, h: neighbours_text(s.neighbours, s.fdb),
    "devices": lambda s, h: (h.vxlan.render() + "\n") if h.vxlan else "",
}


def touched_files(delta: DataplaneDelta) -> set[str]:
    """Which files a delta changes."""
    out = set()
    if (
        delta.ipsets_created
        or delta.ipset_members_added
        or delta.ipset_members_removed
        or delta.ipsets_removed
    ):
        out.add("ipsets")
    if delta.filter_chains_changed or delta.filter_chains_removed:
        out.add("iptables-filter")
    if delta.nat_chains_changed or delta.nat_chains_removed:
        out.add("iptables-nat")
    if delta.routes_added or delta.routes_removed:
        out.add("routes")
    if delta.neighbours_added or delta.neighbours_removed or delta.fdb_added or delta.fdb_removed:
        out.add("neighbours")
    return out


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class DryRunDataplane:
    """Keeps ``directory`` up to date with the rendered state (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.stats = DataplaneStats()
        self.writes = 0  # files written so far (tests use it to see what an apply touched)
        self._host: HostSpec | None = None

    async def apply(
        self, delta: DataplaneDelta, state: DataplaneState, host: HostSpec = NO_HOST
    ) -> None:
        names = touched_files(delta)
        if host != self._host:
            names.add("devices")
        if names:
            await self._write(state, host, names)

    async def resync(self, state: DataplaneState, host: HostSpec = NO_HOST) -> None:
        await self._write(state, host, set(FILES))

    async def host_mtu(self) -> int | None:
        return None  # no node: the engine keeps Felix's fallback host MTU

    def pending_work(self) -> bool:
        return False

    async def retry_pending(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def _write(self, state: DataplaneState, host: HostSpec, names: set[str]) -> None:
        # Rendering is pure and fast; it runs here so the thread only does the file I/O.
        texts = {name: _RENDERERS[name](state, host) for name in FILES if name in names}
        await trio.to_thread.run_sync(self._write_files, texts)
        self._host = host
        self.writes += len(texts)

    def _write_files(self, texts: Mapping[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_atomically(self.directory / name, text)
