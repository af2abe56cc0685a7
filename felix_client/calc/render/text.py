"""Text formats for the appliers: ``iptables-restore --noflush`` input, ``ipset restore`` input and
``ip route`` lines.

With ``--noflush``, declaring ``:chain - [0:0]`` creates the chain or flushes it if it exists;
chains that are not declared are left alone. So a render declares exactly the ``cali-*`` chains it
writes, and a chain is deleted (``-X``) only in the same transaction that rewrote every chain
that referenced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from felix_client.calc.state import FdbEntry, IPSet, Neighbour, Route

MAXELEM = 1048576


def iptables_restore(
    table: str,
    chains: Mapping[str, Sequence[str]],
    removed: Iterable[str] = (),
) -> str:
    """One table's ``iptables-restore --noflush`` input: rewrite ``chains``, delete ``removed``.

    Chains are written in sorted order; a chain may reference one written later, since all
    declarations come first.
    """
    removed = sorted(set(removed) - set(chains))
    names = sorted(chains)
    lines = [f"*{table}"]
    lines.extend(f":{name} - [0:0]" for name in names)
    # Declaring a removed chain flushes it, so its own jumps are gone before -X.
    lines.extend(f":{name} - [0:0]" for name in removed)
    for name in names:
        lines.extend(f"-A {name} {rule}" for rule in chains[name])
    lines.extend(f"-X {name}" for name in removed)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipset_create_line(ipset: IPSet) -> str:
    return f"create {ipset.name} {ipset.type} family inet maxelem {MAXELEM} --exist"


def ipset_restore_full(ipsets: Mapping[str, IPSet]) -> str:
    """``ipset restore`` input that makes every set exactly as given (create, flush, add)."""
    lines = []
    for name in sorted(ipsets):
        ipset = ipsets[name]
        lines.append(ipset_create_line(ipset))
        lines.append(f"flush {name}")
        lines.extend(f"add {name} {m}" for m in sorted(ipset.members))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipset_restore_delta(
    created: Mapping[str, IPSet],
    added: Mapping[str, Iterable[str]],
    removed: Mapping[str, Iterable[str]],
) -> str:
    """``ipset restore`` input for an incremental change (no set destruction: that must wait until
    iptables no longer references the sets; see ``ipset_destroy``)."""
    lines = []
    for name in sorted(created):
        ipset = created[name]
        lines.append(ipset_create_line(ipset))
        lines.append(f"flush {name}")
        lines.extend(f"add {name} {m} --exist" for m in sorted(ipset.members))
    for name in sorted(removed):
        lines.extend(f"del {name} {m} --exist" for m in sorted(removed[name]))
    for name in sorted(added):
        lines.extend(f"add {name} {m} --exist" for m in sorted(added[name]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipset_destroy(names: Iterable[str]) -> str:
    lines = [f"destroy {n}" for n in sorted(names)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def routes_text(routes: Mapping[str, Route]) -> str:
    return "".join(routes[d].render() + "\n" for d in sorted(routes, key=_dst_sort_key))


def neighbours_text(neighbours: Mapping[str, Neighbour], fdb: Mapping[str, FdbEntry]) -> str:
    lines = [neighbours[k].render() for k in sorted(neighbours)]
    lines += [fdb[k].render() for k in sorted(fdb)]
    return "".join(line + "\n" for line in lines)


def _dst_sort_key(dst: str) -> tuple[int, ...]:
    addr, _, plen = dst.partition("/")
    try:
        return (*(int(x) for x in addr.split(".")), int(plen or 32))
    except ValueError:
        return (1 << 30,)
