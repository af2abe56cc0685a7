"""``ipset restore`` sessions for the kernel backend (docs/dataplane.md).

Incremental membership changes are ``add``/``del … --exist`` lines (rendered by
``calc.render.text.ipset_restore_delta``). A set that is (re)created is written *whole* into a
temporary set that is then swapped in, so a set that already exists in the kernel — after an
agent restart, or because a referencing chain still uses it — never passes through an empty or
half-filled state that packets could observe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from felix_client.calc.ipsetspec import IPSET_NAME_MAX, IPV4_PREFIX
from felix_client.calc.render.text import ipset_create_line, ipset_destroy, ipset_restore_delta
from felix_client.calc.state import DataplaneDelta, IPSet

TEMP_PREFIX = "cali4t"  # Felix marks temporary sets with "t" in place of the "0"
OUR_PREFIXES = (IPV4_PREFIX, TEMP_PREFIX)


def temp_name(name: str) -> str:
    """The temporary set used to rewrite ``name`` (same length, so within the 31-char limit)."""
    return (TEMP_PREFIX + name[len(IPV4_PREFIX) :])[:IPSET_NAME_MAX]


def is_ours(name: str) -> bool:
    return name.startswith(OUR_PREFIXES)


def rewrite_lines(ipset: IPSet) -> list[str]:
    """Lines that make ``ipset`` exactly as given, atomically for anyone matching against it."""
    tmp = replace(ipset, name=temp_name(ipset.name))
    lines = [ipset_create_line(tmp), f"flush {tmp.name}"]
    lines.extend(f"add {tmp.name} {m}" for m in sorted(ipset.members))
    lines.append(ipset_create_line(ipset))
    lines.append(f"swap {tmp.name} {ipset.name}")
    lines.append(f"destroy {tmp.name}")
    return lines


def delta_text(delta: DataplaneDelta) -> str | None:
    """The session for a delta's set creations and member changes (``None``: nothing to do).

    Destruction of removed sets is a separate session (``destroy_text``) that must run after
    iptables stopped referencing them.
    """
    if not (delta.ipsets_created or delta.ipset_members_added or delta.ipset_members_removed):
        return None
    lines: list[str] = []
    for name in sorted(delta.ipsets_created):
        lines.extend(rewrite_lines(delta.ipsets_created[name]))
    members = ipset_restore_delta({}, delta.ipset_members_added, delta.ipset_members_removed)
    return "\n".join(lines) + ("\n" if lines else "") + members


def destroy_text(names: Iterable[str]) -> str | None:
    names = sorted(set(names))
    return ipset_destroy(names) if names else None


def full_text(ipsets: Mapping[str, IPSet], existing: Mapping[str, str]) -> str:
    """A session that rewrites every desired set. ``existing`` maps the kernel's ``cali4*`` set
    names to their types: a set whose type changed cannot be swapped, so it is destroyed first
    (which fails, failing the session, while a chain still references it), and leftover
    temporary sets from an interrupted session are destroyed."""
    lines: list[str] = []
    for name, kind in sorted(existing.items()):
        stale_temp = name.startswith(TEMP_PREFIX)
        if stale_temp or (name in ipsets and ipsets[name].type != kind):
            lines.append(f"destroy {name}")
    for name in sorted(ipsets):
        lines.extend(rewrite_lines(ipsets[name]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def parse_list_terse(output: str) -> dict[str, str]:
    """``ipset list -t`` output → {name: type} for our sets."""
    out: dict[str, str] = {}
    name: str | None = None
    for line in output.splitlines():
        if line.startswith("Name: "):
            name = line[6:].strip()
        elif line.startswith("Type: ") and name is not None:
            if is_ours(name):
                out[name] = line[6:].strip()
            name = None
    return out
