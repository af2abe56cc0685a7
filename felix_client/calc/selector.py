"""Calico label selectors: parser, canonical form, unique ID and compiled evaluation.

The grammar and semantics follow felix-model.md §2.1-2.2:

* label identifiers use ``[A-Za-z0-9_./-]`` (at most 512 characters);
* strings are ``'…'`` or ``"…"`` with no escapes;
* whitespace is spaces and tabs only;
* ``!`` may repeat (an odd count negates); ``&&`` binds tighter than ``||``;
* ``not in``, ``starts with`` and ``ends with`` accept any whitespace between their words,
  including none, and must end on a word boundary;
* an empty selector means ``all()``;
* double negation collapses even across parentheses (``!(!x)`` is ``x``), so the canonical form
  always re-parses to itself.

Every parsed selector has a canonical string (``Selector.canonical``) and a unique ID
(``Selector.uid``) that are identical to Calico's, so ipset names derived from them match Felix's.
``parse`` caches its results: policies share a handful of selectors and re-parsing on every
update would dominate the cost of a snapshot.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

MAX_LABEL_LEN = 512

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_WS = " \t"


class SelectorParseError(ValueError):
    """A selector failed to parse; ``position`` is the 0-based character offset of the problem."""

    def __init__(self, selector: str, position: int, message: str) -> None:
        super().__init__(f"invalid selector {selector!r} at position {position}: {message}")
        self.selector = selector
        self.position = position
        self.message = message


# --- AST -----------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    # Calico prefers double quotes; a value containing one can only be written with single quotes
    # (there are no escapes).
    if '"' in value:
        return f"'{value}'"
    return f'"{value}"'


class Node:
    """Base class of selector AST nodes. Nodes are immutable after construction."""

    __slots__ = ()

    def canonical(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def compile(self) -> Matcher:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class AllNode(Node):
    def canonical(self) -> str:
        return "all()"

    def compile(self) -> Matcher:
        return _always_true


@dataclass(frozen=True, slots=True)
class GlobalNode(Node):
    """``global()``: meaningful only before namespace rewriting; matches everything here."""

    def canonical(self) -> str:
        return "global()"

    def compile(self) -> Matcher:
        return _always_true


@dataclass(frozen=True, slots=True)
class HasNode(Node):
    label: str

    def canonical(self) -> str:
        return f"has({self.label})"

    def compile(self) -> Matcher:
        k = self.label
        return lambda labels: k in labels


@dataclass(frozen=True, slots=True)
class EqNode(Node):
    label: str
    value: str

    def canonical(self) -> str:
        return f"{self.label} == {_quote(self.value)}"

    def compile(self) -> Matcher:
        k, v = self.label, self.value
        # A missing label gives None, which never equals a string.
        return lambda labels: labels.get(k) == v


@dataclass(frozen=True, slots=True)
class NeNode(Node):
    label: str
    value: str

    def canonical(self) -> str:
        return f"{self.label} != {_quote(self.value)}"

    def compile(self) -> Matcher:
        k, v = self.label, self.value
        # Exactly !(k == v): a missing label matches.
        return lambda labels: labels.get(k) != v


@dataclass(frozen=True, slots=True)
class InNode(Node):
    label: str
    values: frozenset[str]

    def canonical(self) -> str:
        inner = ", ".join(_quote(v) for v in sorted(self.values))
        return f"{self.label} in {{{inner}}}"

    def compile(self) -> Matcher:
        k, vs = self.label, self.values
        return lambda labels: labels.get(k) in vs


@dataclass(frozen=True, slots=True)
class NotInNode(Node):
    label: str
    values: frozenset[str]

    def canonical(self) -> str:
        inner = ", ".join(_quote(v) for v in sorted(self.values))
        return f"{self.label} not in {{{inner}}}"

    def compile(self) -> Matcher:
        k, vs = self.label, self.values
        return lambda labels: labels.get(k) not in vs


@dataclass(frozen=True, slots=True)
class ContainsNode(Node):
    label: str
    value: str

    def canonical(self) -> str:
        return f"{self.label} contains {_quote(self.value)}"

    def compile(self) -> Matcher:
        k, v = self.label, self.value

        def match(labels: Labels) -> bool:
            x = labels.get(k)
            return x is not None and v in x

        return match


@dataclass(frozen=True, slots=True)
class StartsWithNode(Node):
    label: str
    value: str

    def canonical(self) -> str:
        return f"{self.label} starts with {_quote(self.value)}"

    def compile(self) -> Matcher:
        k, v = self.label, self.value

        def match(labels: Labels) -> bool:
            x = labels.get(k)
            return x is not None and x.startswith(v)

        return match


@dataclass(frozen=True, slots=True)
class EndsWithNode(Node):
    label: str
    value: str

    def canonical(self) -> str:
        return f"{self.label} ends with {_quote(self.value)}"

    def compile(self) -> Matcher:
        k, v = self.label, self.value

        def match(labels: Labels) -> bool:
            x = labels.get(k)
            return x is not None and x.endswith(v)

        return match


@dataclass(frozen=True, slots=True)
class NotNode(Node):
    operand: Node

    def canonical(self) -> str:
        return "!" + self.operand.canonical()

    def compile(self) -> Matcher:
        inner = self.operand.compile()
        return lambda labels: not inner(labels)


@dataclass(frozen=True, slots=True)
class AndNode(Node):
    operands: tuple[Node, ...]

    def canonical(self) -> str:
        return "(" + " && ".join(o.canonical() for o in self.operands) + ")"

    def compile(self) -> Matcher:
        return _fold(tuple(o.compile() for o in self.operands), conj=True)


@dataclass(frozen=True, slots=True)
class OrNode(Node):
    operands: tuple[Node, ...]

    def canonical(self) -> str:
        return "(" + " || ".join(o.canonical() for o in self.operands) + ")"

    def compile(self) -> Matcher:
        return _fold(tuple(o.compile() for o in self.operands), conj=False)


def _always_true(labels: Labels) -> bool:
    return True


def _fold(fns: tuple[Matcher, ...], *, conj: bool) -> Matcher:
    # Nested two-operand closures are markedly faster than all()/any() over a generator.
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        if conj:
            return lambda labels: a(labels) and b(labels)
        return lambda labels: a(labels) or b(labels)
    mid = len(fns) // 2
    return _fold((_fold(fns[:mid], conj=conj), _fold(fns[mid:], conj=conj)), conj=conj)


# --- Parser --------------------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser over the raw string (no separate token list: the tokenizer's
    behaviour depends on context, e.g. operator words are only recognised after a label)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.n = len(text)

    def error(self, message: str, pos: int | None = None) -> SelectorParseError:
        return SelectorParseError(self.text, self.pos if pos is None else pos, message)

    def skip_ws(self) -> None:
        text, n = self.text, self.n
        while self.pos < n and text[self.pos] in _WS:
            self.pos += 1

    def at_word_boundary(self, pos: int) -> bool:
        if pos >= self.n:
            return True
        return self.text[pos] not in _WORD_CHARS

    def parse(self) -> Node:
        self.skip_ws()
        if self.pos == self.n:
            return AllNode()
        node = self.parse_or()
        self.skip_ws()
        if self.pos != self.n:
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while True:
            self.skip_ws()
            if self.text.startswith("||", self.pos):
                self.pos += 2
                operands.append(self.parse_and())
            else:
                break
        return operands[0] if len(operands) == 1 else OrNode(tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_op()]
        while True:
            self.skip_ws()
            if self.text.startswith("&&", self.pos):
                self.pos += 2
                operands.append(self.parse_op())
            else:
                break
        return operands[0] if len(operands) == 1 else AndNode(tuple(operands))

    def parse_op(self) -> Node:
        negations = 0
        while True:
            self.skip_ws()
            # "!=" can't start an operand, so a "!" here is always a negation.
            if self.pos < self.n and self.text[self.pos] == "!":
                negations += 1
                self.pos += 1
            else:
                break
        node = self.parse_primary()
        if negations % 2 == 0:
            return node
        # "!(!x)" collapses too, so that the canonical form re-parses to itself.
        return node.operand if isinstance(node, NotNode) else NotNode(node)

    def parse_primary(self) -> Node:
        text = self.text
        if self.pos >= self.n:
            raise self.error("expected an expression, found end of selector")
        if text[self.pos] == "(":
            self.pos += 1
            inner = self.parse_or()
            self.skip_ws()
            if self.pos >= self.n or text[self.pos] != ")":
                raise self.error("expected ')'")
            self.pos += 1
            return inner
        if text.startswith("has(", self.pos):
            self.pos += 4
            self.skip_ws()
            label = self.parse_label()
            self.skip_ws()
            if self.pos >= self.n or text[self.pos] != ")":
                raise self.error("expected ')' after has(label")
            self.pos += 1
            return HasNode(label)
        for word, node in (("all", AllNode()), ("global", GlobalNode())):
            if text.startswith(word + "(", self.pos):
                save = self.pos
                self.pos += len(word) + 1
                self.skip_ws()
                if self.pos < self.n and text[self.pos] == ")":
                    self.pos += 1
                    return node
                raise self.error(f"expected ')' after {word}(", save + len(word) + 1)
        label = self.parse_label()
        return self.parse_operation(label)

    def parse_label(self) -> str:
        start = self.pos
        text, n = self.text, self.n
        while self.pos < n and text[self.pos] in _LABEL_CHARS:
            self.pos += 1
        if self.pos == start:
            if start >= n:
                raise self.error("expected a label, found end of selector")
            raise self.error(f"expected a label, found {text[start]!r}")
        if self.pos - start > MAX_LABEL_LEN:
            raise self.error(f"label longer than {MAX_LABEL_LEN} characters", start)
        return text[start : self.pos]

    def match_words(self, *words: str) -> bool:
        """Consume ``words`` (any whitespace, or none, between them) if they follow, ending on a
        word boundary."""
        pos = self.pos
        text = self.text
        for i, word in enumerate(words):
            if i:
                while pos < self.n and text[pos] in _WS:
                    pos += 1
            if not text.startswith(word, pos):
                return False
            pos += len(word)
        if not self.at_word_boundary(pos):
            return False
        self.pos = pos
        return True

    def parse_operation(self, label: str) -> Node:
        self.skip_ws()
        text = self.text
        if text.startswith("==", self.pos):
            self.pos += 2
            return EqNode(label, self.parse_string())
        if text.startswith("!=", self.pos):
            self.pos += 2
            return NeNode(label, self.parse_string())
        if self.match_words("not", "in"):
            return NotInNode(label, self.parse_set())
        if self.match_words("in"):
            return InNode(label, self.parse_set())
        if self.match_words("contains"):
            return ContainsNode(label, self.parse_string())
        if self.match_words("starts", "with"):
            return StartsWithNode(label, self.parse_string())
        if self.match_words("ends", "with"):
            return EndsWithNode(label, self.parse_string())
        if self.pos >= self.n:
            raise self.error(f"expected an operator after label {label!r}, found end of selector")
        raise self.error(f"expected an operator after label {label!r}")

    def parse_string(self) -> str:
        self.skip_ws()
        if self.pos >= self.n:
            raise self.error("expected a quoted string, found end of selector")
        quote = self.text[self.pos]
        if quote not in "'\"":
            raise self.error("expected a quoted string")
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.error("unterminated string")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def parse_set(self) -> frozenset[str]:
        self.skip_ws()
        if self.pos >= self.n or self.text[self.pos] != "{":
            raise self.error("expected '{'")
        self.pos += 1
        values: list[str] = []
        self.skip_ws()
        if self.pos < self.n and self.text[self.pos] == "}":
            self.pos += 1
            return frozenset()
        while True:
            values.append(self.parse_string())
            self.skip_ws()
            if self.pos < self.n and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < self.n and self.text[self.pos] == "}":
                self.pos += 1
                return frozenset(values)
            raise self.error("expected ',' or '}'")


# --- Public API ----------------------------------------------------------------------------------


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def selector_uid(canonical: str) -> str:
    """Calico's unique ID for a canonical selector string."""
    return "s:" + _b64url_nopad(hashlib.sha224(("s:" + canonical).encode()).digest())


class Selector:
    """A parsed selector: ``canonical`` string, ``uid``, the AST ``root`` and a fast ``matches``."""

    __slots__ = ("canonical", "matches", "root", "uid")

    def __init__(self, root: Node) -> None:
        self.root = root
        self.canonical = root.canonical()
        self.uid = selector_uid(self.canonical)
        self.matches: Matcher = root.compile()

    def __repr__(self) -> str:
        return f"Selector({self.canonical!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)


def parse_ast(text: str) -> Node:
    """Parse ``text`` into an AST (no caching). Raises ``SelectorParseError``."""
    return _Parser(text).parse()


@lru_cache(maxsize=16384)
def parse(text: str) -> Selector:
    """Parse and compile ``text`` (cached). Raises ``SelectorParseError``."""
    return Selector(parse_ast(text))


ALL = parse("all()")


# --- Label restrictions for indexing -------------------------------------------------------------

# An alternative is (label, values) — the label must be present and, unless values is None, have one
# of those values. A restriction is a tuple of alternatives of which at least one must hold for the
# selector to match; the empty tuple means "matches nothing".
Alternative = tuple[str, frozenset[str] | None]
Restriction = tuple[Alternative, ...]


def restrictions(node: Node) -> list[Restriction]:
    """Necessary conditions for ``node`` to match, each usable to narrow candidate items.

    Returns several options for an AND (each operand's restriction is valid on its own; the label
    index picks the most selective one) and an empty list when no positive condition can be
    derived (e.g. ``!has(x)``, ``a != 'b'``, ``all()``).
    """
    if isinstance(node, EqNode):
        return [((node.label, frozenset((node.value,))),)]
    if isinstance(node, InNode):
        return [((node.label, node.values),)] if node.values else [()]
    if isinstance(node, HasNode | ContainsNode | StartsWithNode | EndsWithNode):
        return [((node.label, None),)]
    if isinstance(node, AndNode):
        out: list[Restriction] = []
        for operand in node.operands:
            out.extend(restrictions(operand))
        return out
    if isinstance(node, OrNode):
        combined: list[Alternative] = []
        for operand in node.operands:
            options = restrictions(operand)
            if not options:
                return []
            combined.extend(min(options, key=_static_cost))
        return [tuple(combined)]
    return []


def _static_cost(restriction: Restriction) -> tuple[int, int]:
    # Without statistics: prefer value matches over presence matches, then fewer alternatives.
    presence = sum(1 for _, values in restriction if values is None)
    return presence, sum(len(values or ()) for _, values in restriction)
