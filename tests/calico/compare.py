"""Compare two Typhas' key/value sets in syncdump's JSON form, and list what differs.

A dump is `{"syncer_type", "status", "kvs": [{key, value, revision, v3_resource_version,
update_type, error?}]}` (what tests/go/syncdump writes).  Calico Typha's side comes from syncdump
live; ours either from syncdump too (once it speaks Calico's wire) or from our msgpack client via
`dump_from_state` and then `calico_typha.reserialize`, so both sides end up in libcalico-go's own
serialization and the comparison is about meaning, not about two encoders' spelling.

Fields a dump does not carry (our msgpack protocol has no per-key revision, resource version or
update type) are None there and are not compared.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

V3_PREFIX = "/calico/resources/v3/projectcalico.org/"
COMPARED_FIELDS = ("value", "v3_resource_version", "update_type", "revision")

# Key path -> kind, first match wins.  Names follow libcalico-go's model key types.
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx))
    for name, rx in (
        ("WorkloadEndpoint", r"^/calico/v1/host/[^/]+/workload/"),
        ("HostEndpoint", r"^/calico/v1/host/[^/]+/endpoint/"),
        ("HostConfig", r"^/calico/v1/host/[^/]+/config/"),
        ("HostMetadata", r"^/calico/v1/host/[^/]+/metadata$"),
        ("HostIP", r"^/calico/v1/host/[^/]+/bird_ip$"),
        ("Wireguard", r"^/calico/v1/host/[^/]+/wireguard$"),
        ("GlobalConfig", r"^/calico/v1/config/"),
        ("ReadyFlag", r"^/calico/v1/Ready$"),
        ("Tier", r"^/calico/v1/policy/tier/[^/]+/metadata$"),
        ("ProfileRules", r"^/calico/v1/policy/profile/[^/]+/rules$"),
        ("ProfileLabels", r"^/calico/v1/policy/profile/[^/]+/labels$"),
        ("Policy", r"^/calico/v1/policy/"),
        ("NetworkSet", r"^/calico/v1/netset/"),
        ("IPPool", r"^/calico/v1/ipam/v[46]/pool/"),
        ("Block", r"^/calico/ipam/v2/assignment/"),
        ("BlockAffinity", r"^/calico/ipam/v2/host/"),
    )
)


def key_kind(key: str) -> str:
    """The model kind of a key path (`Resource:<plural>` for v3 resources)."""
    if key.startswith(V3_PREFIX):
        return "Resource:" + key[len(V3_PREFIX) :].split("/", 1)[0]
    for name, rx in _KINDS:
        if rx.search(key):
            return name
    return "Other:" + "/".join(key.split("/")[:4])


# -- our side ------------------------------------------------------------------------------------


def serialize_ours(value: Any) -> str:
    """Our msgpack-native value as the bytes a Go client would parse (raw strings stay raw)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def dump_from_state(state: Mapping[str, Any], syncer_type: str) -> dict[str, Any]:
    """A syncdump-shaped dump of the state our msgpack client holds after in-sync.

    v3 resources carry their resourceVersion in the object; Calico's wire moves it to the
    update's V3ResourceVersion, so it is moved here too.  Revision and update type are not on
    our msgpack wire: None.
    """
    kvs = []
    for key in sorted(state):
        value = state[key]
        rv: str | None = None
        if key.startswith(V3_PREFIX) and isinstance(value, dict):
            meta = dict(value.get("metadata") or {})
            rv = str(meta.pop("resourceVersion", "") or "")
            value = {**value, "metadata": meta}
        kvs.append(
            {
                "key": key,
                "value": None if value is None else serialize_ours(value),
                "revision": None,
                "v3_resource_version": rv,
                "update_type": None,
            }
        )
    return {"syncer_type": syncer_type, "status": "in-sync", "kvs": kvs}


# -- comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One difference: `what` is only_go, only_ours, parse_error or a field name."""

    syncer_type: str
    kind: str
    key: str
    what: str
    path: str = ""
    go: Any = None
    ours: Any = None

    def describe(self) -> str:
        where = f"{self.key}" + (f" @ {self.path}" if self.path else "")
        if self.what in ("only_go", "only_ours"):
            return f"{self.what}: {where}"
        return f"{self.what}: {where}: go={_short(self.go)} ours={_short(self.ours)}"


def _short(v: Any, limit: int = 160) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _parse(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


_MISSING = object()


def json_diff(go: Any, ours: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, go, ours) for each leaf that differs; a missing side is reported as `<absent>`."""
    if isinstance(go, dict) and isinstance(ours, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(go) | set(ours)):
            sub = f"{path}.{k}" if path else str(k)
            g, o = go.get(k, _MISSING), ours.get(k, _MISSING)
            if g is _MISSING or o is _MISSING:
                out.append(
                    (sub, "<absent>" if g is _MISSING else g, "<absent>" if o is _MISSING else o)
                )
            else:
                out.extend(json_diff(g, o, sub))
        return out
    if isinstance(go, list) and isinstance(ours, list) and len(go) == len(ours):
        out = []
        for i, (g, o) in enumerate(zip(go, ours, strict=True)):
            out.extend(json_diff(g, o, f"{path}[{i}]"))
        return out
    if go == ours and type(go) is type(ours):
        return []
    return [(path, go, ours)]


def compare(go_dump: Mapping[str, Any], our_dump: Mapping[str, Any]) -> list[Difference]:
    """Every difference between the two dumps of one syncer type."""
    syncer = str(go_dump.get("syncer_type") or our_dump.get("syncer_type"))
    go_kvs = {e["key"]: e for e in go_dump["kvs"]}
    our_kvs = {e["key"]: e for e in our_dump["kvs"]}
    diffs: list[Difference] = []
    for key in sorted(set(go_kvs) | set(our_kvs)):
        kind = key_kind(key)
        g, o = go_kvs.get(key), our_kvs.get(key)
        if o is None:
            diffs.append(Difference(syncer, kind, key, "only_go"))
            continue
        if g is None:
            diffs.append(Difference(syncer, kind, key, "only_ours"))
            continue
        if o.get("error"):
            diffs.append(
                Difference(syncer, kind, key, "parse_error", go=g.get("value"), ours=o["error"])
            )
            continue
        for fld in COMPARED_FIELDS:
            gv, ov = g.get(fld), o.get(fld)
            # A field one side's wire does not carry is not compared (a value is, if only one
            # side has it).
            if (gv is None or ov is None) and (fld != "value" or (gv is None and ov is None)):
                continue
            if fld == "value":
                for path, a, b in json_diff(_parse(gv), _parse(ov)):
                    diffs.append(Difference(syncer, kind, key, "value", path, a, b))
            elif gv != ov:
                diffs.append(Difference(syncer, kind, key, fld, "", gv, ov))
    return diffs


# -- the allowlist -------------------------------------------------------------------------------


@dataclass
class Allowed:
    """One expected difference: every field but `reason` is a filter (regex for key and path)."""

    reason: str
    what: str
    kind: str | None = None
    key: str | None = None
    path: str | None = None
    syncer: str | None = None
    datastore: str | None = None
    hits: int = field(default=0, compare=False)

    def matches(self, d: Difference, datastore: str) -> bool:
        if self.what != d.what:
            return False
        if self.syncer and self.syncer != d.syncer_type:
            return False
        if self.datastore and self.datastore != datastore:
            return False
        if self.kind and self.kind != d.kind:
            return False
        if self.key and not re.search(self.key, d.key):
            return False
        return not (self.path and not re.fullmatch(self.path, d.path))


def load_allowlist(path: Path) -> list[Allowed]:
    entries = yaml.safe_load(path.read_text()) or []
    out = []
    for e in entries:
        if not e.get("reason"):
            raise ValueError(f"{path}: every entry needs a reason: {e}")
        out.append(Allowed(**e))
    return out


def split_allowed(
    diffs: Iterable[Difference], allow: list[Allowed], datastore: str
) -> tuple[list[Difference], list[Difference]]:
    """(unexpected, allowed); each allowlist entry counts its hits."""
    unexpected, allowed = [], []
    for d in diffs:
        entry = next((a for a in allow if a.matches(d, datastore)), None)
        if entry is None:
            unexpected.append(d)
        else:
            entry.hits += 1
            allowed.append(d)
    return unexpected, allowed


def stale_entries(allow: list[Allowed], datastore: str) -> list[Allowed]:
    """Entries for this datastore that matched nothing (after `split_allowed`)."""
    return [a for a in allow if a.hits == 0 and (a.datastore is None or a.datastore == datastore)]


# -- the report ----------------------------------------------------------------------------------


def summarize(
    go_dump: Mapping[str, Any], our_dump: Mapping[str, Any], diffs: list[Difference]
) -> dict[str, Any]:
    """Per kind: keys on each side, keys equal, and which value paths differ (with counts)."""
    go_kinds = Counter(key_kind(e["key"]) for e in go_dump["kvs"])
    our_kinds = Counter(key_kind(e["key"]) for e in our_dump["kvs"])
    differing_keys: dict[str, set[str]] = defaultdict(set)
    paths: dict[str, Counter[str]] = defaultdict(Counter)
    for d in diffs:
        differing_keys[d.kind].add(d.key)
        label = d.what if d.what != "value" else "value " + re.sub(r"\[\d+\]", "[]", d.path)
        paths[d.kind][label] += 1
    shared = {e["key"] for e in go_dump["kvs"]} & {e["key"] for e in our_dump["kvs"]}
    kinds = {}
    for kind in sorted(set(go_kinds) | set(our_kinds)):
        shared_here = {k for k in shared if key_kind(k) == kind}
        kinds[kind] = {
            "go": go_kinds.get(kind, 0),
            "ours": our_kinds.get(kind, 0),
            "shared_equal": len(shared_here - differing_keys[kind]),
            "shared": len(shared_here),
            "differences": dict(paths[kind]),
        }
    return {
        "syncer_type": go_dump.get("syncer_type"),
        "go_keys": len(go_dump["kvs"]),
        "our_keys": len(our_dump["kvs"]),
        "kinds": kinds,
    }


def render_markdown(title: str, summaries: list[dict[str, Any]], diffs: list[Difference]) -> str:
    lines = [f"# {title}", ""]
    for s in summaries:
        lines += [
            f"## {s['syncer_type']}: Go {s['go_keys']} keys, ours {s['our_keys']}",
            "",
            "| kind | Go | ours | shared equal / shared | differences (count) |",
            "|---|---|---|---|---|",
        ]
        for kind, k in s["kinds"].items():
            what = "; ".join(f"{p} ({n})" for p, n in sorted(k["differences"].items()))
            equal = f"{k['shared_equal']} / {k['shared']}"
            lines.append(f"| {kind} | {k['go']} | {k['ours']} | {equal} | {what} |")
        lines.append("")
    lines += ["## Every difference", ""]
    lines += [f"- [{d.syncer_type}] {d.describe()}" for d in diffs]
    return "\n".join(lines) + "\n"
