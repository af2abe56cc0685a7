"""Selector tokens: the tokenizer and balance check shared by the converters' selector rewriting
(``selectors``) and the canonical printer (``selector_canon``)."""

from __future__ import annotations

from dataclasses import dataclass

from typha.sync.convert.errors import InvalidResource

WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word", "str", or the punctuation itself: ( ) { } , && || ! == !=
    text: str
    start: int
    end: int


def tokenize(selector: str, field: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(selector)
    while i < n:
        c = selector[i]
        if c in " \t":
            i += 1
        elif c in "'\"":
            close = selector.find(c, i + 1)
            if close < 0:
                raise InvalidResource(
                    f"unterminated string starting at offset {i} in selector {selector!r}",
                    field=field,
                )
            tokens.append(Token("str", selector[i : close + 1], i, close + 1))
            i = close + 1
        elif selector.startswith(("&&", "||", "==", "!="), i):
            op = selector[i : i + 2]
            tokens.append(Token(op, op, i, i + 2))
            i += 2
        elif c in "(){},!":
            tokens.append(Token(c, c, i, i + 1))
            i += 1
        elif c in WORD_CHARS:
            j = i
            while j < n and selector[j] in WORD_CHARS:
                j += 1
            tokens.append(Token("word", selector[i:j], i, j))
            i = j
        else:
            raise InvalidResource(
                f"unexpected character {c!r} at offset {i} in selector {selector!r}", field=field
            )
    return tokens


def check_balance(selector: str, tokens: list[Token], field: str) -> None:
    depth = 0
    in_set = False
    for tok in tokens:
        if tok.kind == "(":
            if in_set:
                raise InvalidResource(f"'(' inside a set in selector {selector!r}", field=field)
            depth += 1
        elif tok.kind == ")":
            depth -= 1
            if depth < 0:
                raise InvalidResource(f"unbalanced ')' in selector {selector!r}", field=field)
        elif tok.kind == "{":
            if in_set:
                raise InvalidResource(f"nested '{{' in selector {selector!r}", field=field)
            in_set = True
        elif tok.kind == "}":
            if not in_set:
                raise InvalidResource(f"unbalanced '}}' in selector {selector!r}", field=field)
            in_set = False
    if depth:
        raise InvalidResource(f"unbalanced '(' in selector {selector!r}", field=field)
    if in_set:
        raise InvalidResource(f"unterminated set in selector {selector!r}", field=field)
    if tokens and tokens[0].kind in ("&&", "||"):
        raise InvalidResource(f"selector {selector!r} starts with an operator", field=field)
    if tokens and tokens[-1].kind in ("&&", "||", "!", "==", "!="):
        raise InvalidResource(f"selector {selector!r} ends with an operator", field=field)
