"""Calico label selectors: parser, canonical form, unique ID and compiled evaluation.

The grammar and semantics are Felix's (docs/felix-calc.md, "Selectors"):

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
        return _canonical(self)

    def compile(self) -> Matcher:
        if _eval_depth(self) > _MAX_CLOSURE_DEPTH:
            return _IterativeMatcher(self)
        inner = self.operand.compile()
        return lambda labels: not inner(labels)


@dataclass(frozen=True, slots=True)
class AndNode(Node):
    operands: tuple[Node, ...]

    def canonical(self) -> str:
        return _canonical(self)

    def compile(self) -> Matcher:
        if _eval_depth(self) > _MAX_CLOSURE_DEPTH:
            return _IterativeMatcher(self)
        return _fold(tuple(o.compile() for o in self.operands), conj=True)


@dataclass(frozen=True, slots=True)
class OrNode(Node):
    operands: tuple[Node, ...]

    def canonical(self) -> str:
        return _canonical(self)

    def compile(self) -> Matcher:
        if _eval_depth(self) > _MAX_CLOSURE_DEPTH:
            return _IterativeMatcher(self)
        return _fold(tuple(o.compile() for o in self.operands), conj=False)


def _always_true(labels: Labels) -> bool:
    return True


# --- Deep selectors ------------------------------------------------------------------------------
#
# Calico sets no limit on selector nesting, and Go's stack grows as needed; Python's does not.
# Everything that walks a tree (canonical form, evaluation, restrictions) therefore either
# iterates with an explicit stack, or recurses only on trees known to be shallow.

# Compiled closures call each other once per level (and log2(n) times for an n-operand AND/OR):
# beyond this many nested calls a selector is evaluated by _IterativeMatcher instead.
_MAX_CLOSURE_DEPTH = 100


def _eval_depth(root: Node) -> int:
    """How deep compiled closures for ``root`` would call each other (iterative)."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, NotNode):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, AndNode | OrNode):
            extra = max(1, (len(node.operands) - 1).bit_length())
            stack.extend((o, depth + extra) for o in node.operands)
        elif depth > deepest:
            deepest = depth
    return deepest


def _canonical(root: Node) -> str:
    """The canonical string of ``root``, built bottom-up with an explicit stack."""
    done: list[str] = []
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, NotNode):
            if children_done:
                done.append("!" + done.pop())
            else:
                stack.append((node, True))
                stack.append((node.operand, False))
        elif isinstance(node, AndNode | OrNode):
            if children_done:
                n = len(node.operands)
                parts = done[-n:]
                del done[-n:]
                sep = " && " if isinstance(node, AndNode) else " || "
                done.append("(" + sep.join(parts) + ")")
            else:
                stack.append((node, True))
                stack.extend((o, False) for o in reversed(node.operands))
        else:
            done.append(node.canonical())
    return done[0]


class _IterativeMatcher:
    """Evaluates a deep selector with an explicit stack (short-circuiting like the closures).
    Slower than compiled closures, so only used where those would nest too deep."""

    __slots__ = ("_leaves", "_root")

    def __init__(self, root: Node) -> None:
        self._root = root
        self._leaves: dict[int, Matcher] = {}
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, NotNode):
                stack.append(node.operand)
            elif isinstance(node, AndNode | OrNode):
                stack.extend(node.operands)
            else:
                self._leaves[id(node)] = node.compile()

    def __call__(self, labels: Labels) -> bool:
        leaves = self._leaves
        result = False
        # Frames: [node, index of the next operand to evaluate].
        stack: list[list] = [[self._root, 0]]
        while stack:
            frame = stack[-1]
            node = frame[0]
            if isinstance(node, NotNode):
                if frame[1] == 0:
                    frame[1] = 1
                    stack.append([node.operand, 0])
                    continue
                result = not result
            elif isinstance(node, AndNode | OrNode):
                i = frame[1]
                # ``result`` holds operand i-1's value: stop at the first False (AND) or True
                # (OR); after the last operand, ``result`` is the group's value.
                decided = i > 0 and result is (not isinstance(node, AndNode))
                if not decided and i < len(node.operands):
                    frame[1] = i + 1
                    stack.append([node.operands[i], 0])
                    continue
            else:
                result = leaves[id(node)](labels)
            stack.pop()
        return result


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


class _Group:
    """One parenthesised group while it is being parsed: its OR of ANDs so far, and the
    negations written before its "(" (applied when it closes)."""

    __slots__ = ("and_operands", "negations", "or_operands")

    def __init__(self, negations: int) -> None:
        self.negations = negations
        self.or_operands: list[Node] = []
        self.and_operands: list[Node] = []

    def close_and(self) -> None:
        ops = self.and_operands
        self.or_operands.append(ops[0] if len(ops) == 1 else AndNode(tuple(ops)))
        self.and_operands = []

    def result(self) -> Node:
        self.close_and()
        ops = self.or_operands
        return ops[0] if len(ops) == 1 else OrNode(tuple(ops))


def _negate(node: Node, negations: int) -> Node:
    if negations % 2 == 0:
        return node
    return node.operand if isinstance(node, NotNode) else NotNode(node)


class _Parser:
    """Parser over the raw string (no separate token list: the tokenizer's behaviour depends
    on context, e.g. operator words are only recognised after a label). Nesting is handled with
    an explicit stack, never by recursion."""

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
        """The whole selector. Iterative: each open parenthesis is a frame on an explicit
        stack, not a Python call, so nesting depth is limited by memory only (Calico sets no
        limit either)."""
        text, n = self.text, self.n
        self.skip_ws()
        if self.pos == n:
            return AllNode()
        stack = [_Group(0)]
        while True:
            # An operand: "!"* then a parenthesised group (a new frame) or a primary.
            negations = 0
            while True:
                self.skip_ws()
                # "!=" can't start an operand, so a "!" here is always a negation.
                if self.pos < n and text[self.pos] == "!":
                    negations += 1
                    self.pos += 1
                else:
                    break
            if self.pos < n and text[self.pos] == "(":
                self.pos += 1
                stack.append(_Group(negations))
                continue
            node = _negate(self.parse_primary(), negations)
            # After an operand: "&&", "||", ")" (closing groups, each again an operand of the
            # enclosing one), or the end.
            while True:
                group = stack[-1]
                group.and_operands.append(node)
                self.skip_ws()
                if text.startswith("&&", self.pos):
                    self.pos += 2
                    break
                if text.startswith("||", self.pos):
                    self.pos += 2
                    group.close_and()
                    break
                if len(stack) == 1:
                    if self.pos != n:
                        raise self.error(f"unexpected {text[self.pos]!r}")
                    return group.result()
                if self.pos >= n or text[self.pos] != ")":
                    raise self.error("expected ')'")
                self.pos += 1
                stack.pop()
                # "!(!x)" collapses too, so that the canonical form re-parses to itself.
                node = _negate(group.result(), group.negations)

    def parse_primary(self) -> Node:
        text = self.text
        if self.pos >= self.n:
            raise self.error("expected an expression, found end of selector")
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
    derived (e.g. ``!has(x)``, ``a != 'b'``, ``all()``) — or when the selector is too deep to
    walk recursively (the index then tests it against every item, which is always correct).
    """
    if isinstance(node, AndNode | OrNode) and _eval_depth(node) > _MAX_CLOSURE_DEPTH:
        return []
    return _restrictions(node)


def _restrictions(node: Node) -> list[Restriction]:
    if isinstance(node, EqNode):
        return [((node.label, frozenset((node.value,))),)]
    if isinstance(node, InNode):
        return [((node.label, node.values),)] if node.values else [()]
    if isinstance(node, HasNode | ContainsNode | StartsWithNode | EndsWithNode):
        return [((node.label, None),)]
    if isinstance(node, AndNode):
        out: list[Restriction] = []
        for operand in node.operands:
            out.extend(_restrictions(operand))
        return out
    if isinstance(node, OrNode):
        combined: list[Alternative] = []
        for operand in node.operands:
            options = _restrictions(operand)
            if not options:
                return []
            combined.extend(min(options, key=_static_cost))
        return [tuple(combined)]
    return []


def _static_cost(restriction: Restriction) -> tuple[int, int]:
    # Without statistics: prefer value matches over presence matches, then fewer alternatives.
    presence = sum(1 for _, values in restriction if values is None)
    return presence, sum(len(values or ()) for _, values in restriction)
