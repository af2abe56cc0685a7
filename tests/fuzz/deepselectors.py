"""Depth-aware selector generation for the fuzzers: a random selector nested up to thousands of
levels, with its meaning evaluated without recursion.

A selector is built inside out from a leaf by ``depth`` random steps — negate, AND or OR with
another leaf (on either side), or just add parentheses — drawn from a ``random.Random`` (so
hypothesis and libFuzzer can both drive it: hypothesis draws the seed, libFuzzer the bytes).
``expected(labels)`` replays the steps in order; nothing recurses, at any depth.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Labels = dict[str, str]
KEYS = ("a", "b", "c.d/e")
VALUES = ("", "x", "y", "xy")


def _leaf(rng: random.Random) -> tuple[str, Callable[[Labels], bool]]:
    key, value = rng.choice(KEYS), rng.choice(VALUES)
    values = frozenset(rng.sample(VALUES, rng.randint(0, 3)))
    quoted = ", ".join(f"'{v}'" for v in sorted(values))
    op = rng.randrange(8)
    if op == 0:
        return f"{key} == '{value}'", lambda ls: ls.get(key) == value
    if op == 1:
        return f"{key} != '{value}'", lambda ls: ls.get(key) != value
    if op == 2:
        return f"has({key})", lambda ls: key in ls
    if op == 3:
        return f"{key} in {{{quoted}}}", lambda ls: ls.get(key) in values
    if op == 4:
        return f"{key} not in {{{quoted}}}", lambda ls: ls.get(key) not in values
    if op == 5:
        return f"{key} contains '{value}'", lambda ls: key in ls and value in ls[key]
    if op == 6:
        return f"{key} starts with '{value}'", lambda ls: key in ls and ls[key].startswith(value)
    return "all()", lambda ls: True


@dataclass
class DeepSelector:
    text: str
    depth: int
    _base: Callable[[Labels], bool]
    _steps: list[tuple[str, Callable[[Labels], bool]]]

    def expected(self, labels: Labels) -> bool:
        value = self._base(labels)
        for kind, leaf in self._steps:
            if kind == "not":
                value = not value
            elif kind == "and":
                value = value and leaf(labels)
            elif kind == "or":
                value = value or leaf(labels)
        return value


def deep_selector(rng: random.Random, depth: int) -> DeepSelector:
    text, base = _leaf(rng)
    steps: list[tuple[str, Callable[[Labels], bool]]] = []
    parts = [text]  # joined once at the end: repeated string building would be quadratic
    prefix: list[str] = []
    for _ in range(depth):
        kind = rng.choice(("not", "and", "or", "and-left", "or-left", "paren"))
        leaf_text, leaf = _leaf(rng)
        if kind == "not":
            prefix.append("!(")
            parts.append(")")
        elif kind == "paren":
            prefix.append("(")
            parts.append(")")
        elif kind in ("and", "or"):
            op = "&&" if kind == "and" else "||"
            prefix.append("(")
            parts.append(f") {op} {leaf_text}")
        else:
            op = "&&" if kind == "and-left" else "||"
            prefix.append(f"{leaf_text} {op} (")
            parts.append(")")
        # The whole expression so far is wrapped, so every step keeps the meaning intact.
        prefix_kind = kind.split("-")[0]
        steps.append((prefix_kind, leaf))
    prefix.reverse()
    return DeepSelector("".join(prefix) + "".join(parts), depth, base, steps)


def random_labels(rng: random.Random) -> Labels:
    return {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6}
