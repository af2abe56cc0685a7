"""Structure-aware mutation of JSON documents, for fuzzing the resource converters.

Byte-level mutation of a resource's JSON mostly yields text that is no longer JSON, which the
datastores reject before any converter runs. These mutations keep the document JSON and change
its shape and values instead: replace a value by one of another type or an awkward one of the
same type, drop a field, add one (often a real field name in the wrong place), duplicate or
empty a list, splice in a subtree from elsewhere in the document.
"""

from __future__ import annotations

import copy
import random
from typing import Any

AWKWARD_STRINGS = [
    "",
    " ",
    "x" * 300,
    "10.0.0.300/24",
    "10.0.0.0/33",
    "::1",
    "fe80::1%eth0",
    "2001:db8::/129",
    "0.0.0.0/0",
    "1.2.3.4",
    "-1",
    "65536",
    "1:2:3",
    "80:70",
    "http",
    "TCP",
    "ICMP",
    "all()",
    "!has(",
    "a == 'b' && c in {'d'}",
    "has(x) || !(y != 'z')",
    "global()",
    "\x00",
    "é/ü",
    "a/b/c",
    "%2f",
    "Allow",
    "Deny",
    "Pass",
    "Log",
    "Ingress",
    "Egress",
    "true",
    "1h2m",
    "aa:bb:cc:dd:ee:ff",
    "zz:zz",
]
AWKWARD_NUMBERS = [0, -1, 1, 255, 256, 65535, 65536, 2**31, 2**63 - 1, -(2**63), 2**64, 0.5, 1e308]
FIELD_NAMES = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "metadata",
    "selector",
    "nets",
    "ports",
    "port",
    "protocol",
    "ingress",
    "egress",
    "action",
    "source",
    "destination",
    "order",
    "tier",
    "types",
    "node",
    "interfaceName",
    "ipNetworks",
    "profiles",
    "cidr",
    "allocations",
    "unallocated",
    "affinity",
    "podIP",
    "podIPs",
    "status",
    "nodeName",
    "addresses",
    "kind",
    "apiVersion",
    "deletionTimestamp",
]


def _random_leaf(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(AWKWARD_STRINGS)
    if roll < 0.7:
        return rng.choice(AWKWARD_NUMBERS)
    if roll < 0.8:
        return rng.choice([None, True, False])
    if roll < 0.9:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(8)))
    return rng.choice([[], {}, [None], {"": None}, [[]], {"k": {}}])


def _containers(doc: Any) -> list[Any]:
    """Every dict and list in ``doc`` (the root included), in document order."""
    found: list[Any] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            found.append(node)
            stack.extend(node)
    return found


def _new_value(rng: random.Random, doc: Any) -> Any:
    if rng.random() < 0.15:
        # A copy of another part of the same document: right shape, wrong place.
        return copy.deepcopy(rng.choice(_containers(doc)))
    return _random_leaf(rng)


def mutate_once(doc: Any, rng: random.Random) -> None:
    """One mutation, in place. ``doc`` must be a dict or list."""
    target = rng.choice(_containers(doc))
    op = rng.randrange(5)
    if isinstance(target, dict):
        keys = list(target)
        if op <= 1 and keys:  # replace a value
            target[rng.choice(keys)] = _new_value(rng, doc)
        elif op == 2 and keys:  # drop a field
            del target[rng.choice(keys)]
        elif op == 3 and keys:  # mutate a string value a little
            key = rng.choice(keys)
            if isinstance(target[key], str):
                target[key] = _mutate_string(target[key], rng)
            else:
                target[key] = _new_value(rng, doc)
        else:  # add a field
            target[rng.choice(FIELD_NAMES)] = _new_value(rng, doc)
    else:
        if op <= 1 and target:
            target[rng.randrange(len(target))] = _new_value(rng, doc)
        elif op == 2 and target:
            del target[rng.randrange(len(target))]
        elif op == 3 and target:
            target.extend(copy.deepcopy(target))
        else:
            target.insert(rng.randrange(len(target) + 1), _new_value(rng, doc))


def _mutate_string(text: str, rng: random.Random) -> str:
    if not text or rng.random() < 0.3:
        return rng.choice(AWKWARD_STRINGS)
    pos = rng.randrange(len(text))
    return text[:pos] + rng.choice(["", "/", ".", ":", "-", "9", "'", ")", "\\"]) + text[pos + 1 :]


def mutate(doc: Any, rng: random.Random, n: int) -> Any:
    """A mutated deep copy of ``doc`` (``n`` mutations)."""
    out = copy.deepcopy(doc)
    for _ in range(n):
        mutate_once(out, rng)
    return out
