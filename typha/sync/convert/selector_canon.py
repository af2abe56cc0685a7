"""libcalico-go's canonical text of a selector, with a label prefix applied.

Calico rewrites a namespaceSelector or service-account selector by parsing it, prefixing every
label (``pcns.``/``pcsa.``) and printing the parsed form back; Felix receives that printed form,
so we print it the same way to send the same bytes:

* ``a && b`` (two or more operands) prints as ``(a && b)``, ``a || b`` as ``(a || b)``; a single
  operand and the user's own parentheses print bare (``((a))`` → ``a``);
* ``!x`` prints ``!`` then ``x``;
* comparisons print ``label == "v"`` (``!=``, ``contains``, ``starts with``, ``ends with`` alike),
  with double quotes unless the value holds a double quote (then single quotes);
* sets print ``label in {"a", "b"}`` (``not in``), values sorted and without repeats;
* ``has(label)``, ``all()``, ``global()`` as they are.

The user's own top-level ``selector`` is never reprinted (Calico passes it through verbatim).
"""

from __future__ import annotations

from dataclasses import dataclass

from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.selector_tokens import check_balance, tokenize

_COMPARISONS = {"==": "==", "!=": "!=", "contains": "contains"}
_TWO_WORD = {("starts", "with"): "starts with", ("ends", "with"): "ends with"}


@dataclass
class _Parser:
    tokens: list  # selector_tokens.Token: kind/text
    prefix: str
    selector: str
    field: str
    pos: int = 0

    def fail(self, what: str) -> InvalidResource:
        return InvalidResource(f"{what} in selector {self.selector!r}", field=self.field)

    def peek(self, offset: int = 0) -> object | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self) -> object:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        self.pos += 1
        return tok

    def parse_or(self) -> str:
        parts = [self.parse_and()]
        while (tok := self.peek()) is not None and tok.kind == "||":
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"

    def parse_and(self) -> str:
        parts = [self.parse_operation()]
        while (tok := self.peek()) is not None and tok.kind == "&&":
            self.pos += 1
            parts.append(self.parse_operation())
        return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"

    def parse_operation(self) -> str:
        nots = 0
        while (tok := self.peek()) is not None and tok.kind == "!":
            self.pos += 1
            nots += 1
        tok = self.take()
        if tok.kind == "(":
            inner = self.parse_or()
            if self.take().kind != ")":
                raise self.fail("expected ')'")
            return "!" * nots + inner
        if tok.kind != "word":
            raise self.fail(f"unexpected {tok.text!r}")
        nxt = self.peek()
        if nxt is not None and nxt.kind == "(":
            return "!" * nots + self.function(tok.text)
        return "!" * nots + self.comparison(tok.text)

    def function(self, name: str) -> str:
        self.take()  # (
        if name == "has":
            arg = self.take()
            if arg.kind != "word" or self.take().kind != ")":
                raise self.fail("malformed has()")
            return f"has({self.prefix}{arg.text})"
        if name in ("all", "global"):
            if self.take().kind != ")":
                raise self.fail(f"{name}() takes no arguments")
            return f"{name}()"
        raise self.fail(f"unknown function {name!r}")

    def comparison(self, label: str) -> str:
        op_tok = self.take()
        name = f"{self.prefix}{label}"
        if op_tok.kind in ("==", "!="):
            return f"{name} {op_tok.kind} {_quote(self.string())}"
        if op_tok.kind == "word":
            if op_tok.text == "contains":
                return f"{name} contains {_quote(self.string())}"
            if op_tok.text == "in":
                return f"{name} in {self.string_set()}"
            nxt = self.take()
            two = (op_tok.text, getattr(nxt, "text", ""))
            if two == ("not", "in"):
                return f"{name} not in {self.string_set()}"
            if two in _TWO_WORD:
                return f"{name} {_TWO_WORD[two]} {_quote(self.string())}"
        raise self.fail(f"expected an operator after {label!r}")

    def string(self) -> str:
        tok = self.take()
        if tok.kind != "str":
            raise self.fail("expected a quoted string")
        return tok.text[1:-1]

    def string_set(self) -> str:
        if self.take().kind != "{":
            raise self.fail("expected '{'")
        values: set[str] = set()
        if (tok := self.peek()) is not None and tok.kind == "}":
            self.pos += 1
            return "{}"
        while True:
            values.add(self.string())
            tok = self.take()
            if tok.kind == "}":
                break
            if tok.kind != ",":
                raise self.fail("expected ',' or '}' in a set")
        return "{" + ", ".join(_quote(v) for v in sorted(values)) + "}"


def _quote(value: str) -> str:
    q = "'" if '"' in value else '"'
    return f"{q}{value}{q}"


def canonical(selector: str, field: str, *, prefix: str = "") -> str:
    """``selector`` parsed and printed as libcalico-go prints it, every label ``prefix``-ed."""
    tokens = tokenize(selector, field)
    check_balance(selector, tokens, field)
    if not tokens:
        return ""
    parser = _Parser(tokens, prefix, selector, field)
    out = parser.parse_or()
    if parser.pos != len(tokens):
        raise parser.fail(f"unexpected {tokens[parser.pos].text!r}")
    return out
