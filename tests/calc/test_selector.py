"""Selector grammar, semantics, canonical form and IDs (docs/felix-calc.md, "Selectors")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_client.calc.selector import SelectorParseError, parse, parse_ast, selector_uid

LABELS = {"a": "x", "b": "yz", "app.kubernetes.io/name": "web", "empty": ""}


def matches(sel: str, labels=LABELS) -> bool:
    return parse(sel).matches(labels)


@pytest.mark.parametrize(
    ("sel", "expected"),
    [
        ("all()", True),
        ("global()", True),
        ("", True),
        ("  \t ", True),
        ("a == 'x'", True),
        ('a == "x"', True),
        ("a == 'y'", False),
        ("missing == 'x'", False),
        ("a != 'x'", False),
        ("a != 'y'", True),
        ("missing != 'x'", True),  # != also matches a missing label
        ("has(a)", True),
        ("has(missing)", False),
        ("!has(a)", False),
        ("!has(missing)", True),
        ("a in {'x', 'y'}", True),
        ("a in {'y'}", False),
        ("a in {}", False),
        ("missing in {'x'}", False),
        ("a not in {'x'}", False),
        ("a not in {'y'}", True),
        ("missing not in {'x'}", True),  # not in also matches a missing label
        ("a not in {}", True),
        ("b contains 'y'", True),
        ("b contains 'q'", False),
        ("missing contains ''", False),
        ("b starts with 'y'", True),
        ("b starts with 'z'", False),
        ("b ends with 'z'", True),
        ("b ends with 'y'", False),
        ("missing starts with ''", False),
        ("empty == ''", True),
        ("has(empty)", True),
        ("app.kubernetes.io/name == 'web'", True),
        ("a == 'x' && b == 'yz'", True),
        ("a == 'x' && b == 'no'", False),
        ("a == 'no' || b == 'yz'", True),
        ("a == 'no' || b == 'no'", False),
    ],
)
def test_operators(sel: str, expected: bool) -> None:
    assert matches(sel) is expected


def test_precedence_and_binds_tighter_than_or() -> None:
    # a || (b && c), not (a || b) && c
    sel = "a == 'x' || b == 'no' && missing == 'q'"
    assert matches(sel)
    assert parse(sel).canonical == '(a == "x" || (b == "no" && missing == "q"))'
    assert not matches("(a == 'x' || b == 'no') && missing == 'q'")


def test_not_binds_to_one_operand() -> None:
    assert parse("!a == 'x' && b == 'yz'").canonical == '(!a == "x" && b == "yz")'
    assert not matches("!a == 'x' && b == 'yz'")
    assert matches("!a == 'y' && b == 'yz'")
    assert matches("!(a == 'x' && b == 'no')")
    assert parse("!(a == 'x' || has(b))").canonical == '!(a == "x" || has(b))'


@pytest.mark.parametrize(
    ("sel", "canonical"),
    [
        ("!!has(a)", "has(a)"),
        ("!!!has(a)", "!has(a)"),
        ("! ! !  has(a)", "!has(a)"),
        ("!!!!a == 'x'", 'a == "x"'),
    ],
)
def test_repeated_negation_collapses(sel: str, canonical: str) -> None:
    assert parse(sel).canonical == canonical


@pytest.mark.parametrize(
    "sel",
    [
        "a notin {'y'}",
        "a not in {'y'}",
        "a not  \t in {'y'}",
        "a notin{'y'}",
        "a\tnot\tin\t{\t'y'\t}",
    ],
)
def test_not_in_spacing_variants(sel: str) -> None:
    assert parse(sel).canonical == 'a not in {"y"}'
    assert matches(sel)


@pytest.mark.parametrize(
    ("sel", "canonical"),
    [
        ("b startswith 'y'", 'b starts with "y"'),
        ("b starts   with 'y'", 'b starts with "y"'),
        ("b endswith 'z'", 'b ends with "z"'),
        ("b ends\twith 'z'", 'b ends with "z"'),
        ("b contains'y'", 'b contains "y"'),
        ("a=='x'", 'a == "x"'),
        ("a!='x'", 'a != "x"'),
        ("has( a )", "has(a)"),
        ("all( )", "all()"),
        ("\ta == 'x'\t", 'a == "x"'),
        ("a in {'x','x','b'}", 'a in {"b", "x"}'),
        ("a in { }", "a in {}"),
        ("(a == 'x')", 'a == "x"'),
        ("((((a == 'x'))))", 'a == "x"'),
        ("(a == 'x') && (b == 'y' && c == 'z')", '(a == "x" && (b == "y" && c == "z"))'),
        ("a == 'x' && b == 'y' && c == 'z'", '(a == "x" && b == "y" && c == "z")'),
        ("a == 'x' || b == 'y' || c == 'z'", '(a == "x" || b == "y" || c == "z")'),
        ("a == 'it\"s'", "a == 'it\"s'"),
        ('a == "it\'s"', 'a == "it\'s"'),
        ("1abc == 'x'", '1abc == "x"'),
        ("a-b_c.d/e == 'x'", 'a-b_c.d/e == "x"'),
        ("has == 'x'", 'has == "x"'),
        ("all == 'x'", 'all == "x"'),
        ("in in {'x'}", 'in in {"x"}'),
    ],
)
def test_canonical_forms(sel: str, canonical: str) -> None:
    assert parse(sel).canonical == canonical
    assert parse(canonical).canonical == canonical


def test_quotes_of_both_kinds() -> None:
    labels = {"q": 'say "hi"', "p": "it's"}
    assert matches("q == 'say \"hi\"'", labels)
    assert matches('p == "it\'s"', labels)
    assert parse("q == 'say \"hi\"'").canonical == "q == 'say \"hi\"'"


def test_deep_parentheses() -> None:
    sel = "(" * 60 + "a == 'x'" + ")" * 60
    assert matches(sel)
    assert parse(sel).canonical == 'a == "x"'


def test_all_uid_and_known_id() -> None:
    assert parse("all()").uid == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert parse("").uid == parse("all()").uid
    assert selector_uid("all()") == parse("  ").uid
    # Equivalent spellings share one ID; different selectors do not.
    assert parse("a=='x'").uid == parse('(a == "x")').uid
    assert parse("a == 'x'").uid != parse("a == 'y'").uid


def test_parse_is_cached() -> None:
    assert parse("a == 'cached'") is parse("a == 'cached'")


@pytest.mark.parametrize(
    ("sel", "position"),
    [
        ("a ==", 4),
        ("a = 'b'", 2),
        ("a == 'b", 5),
        ("has(a", 5),
        ("has()", 4),
        ("(a == 'x'", 9),
        ("a == 'x' b", 9),
        ("a == 'x' &&", 11),
        ("a == 'x' & b == 'y'", 9),
        ("a inx {'x'}", 2),
        ("a containsx 'b'", 2),
        ("a in {'x' 'y'}", 10),
        ("a in {'x',}", 10),
        ("a in 'x'", 5),
        ("a == x", 5),
        ("a == 'x'\n", 8),
        ("\na == 'x'", 0),
        ("all(x)", 4),
        ("a == 'x' ||| b == 'y'", 11),
        ("()", 1),
        ("a", 1),
        ("!", 1),
        ("a not {'x'}", 2),
        ("a starts 'x'", 2),
        ("é == 'x'", 0),
    ],
)
def test_parse_errors_have_positions(sel: str, position: int) -> None:
    with pytest.raises(SelectorParseError) as info:
        parse(sel)
    assert info.value.position == position
    assert info.value.selector == sel
    assert repr(sel) in str(info.value)
    assert f"position {position}" in str(info.value)


def test_label_length_limit() -> None:
    parse("k" * 512 + " == 'x'")
    with pytest.raises(SelectorParseError):
        parse("k" * 513 + " == 'x'")


# --- Property test: compiled evaluation vs. a straightforward reference ------------------------

KEYS = ["a", "b", "c.d/e"]
VALUES = ["", "x", "y", "xy", 'q"', "it's"]


def _quote(value: str, draw_single: bool) -> str:
    if '"' in value:
        return f"'{value}'"
    if "'" in value:
        return f'"{value}"'
    return f"'{value}'" if draw_single else f'"{value}"'


ws = st.sampled_from(["", " ", "  ", "\t", " \t "])


@st.composite
def leaf(draw):
    key = draw(st.sampled_from(KEYS))
    op = draw(
        st.sampled_from(
            ["eq", "ne", "has", "in", "notin", "contains", "starts", "ends", "all", "global"]
        )
    )
    value = draw(st.sampled_from(VALUES))
    values = draw(st.lists(st.sampled_from(VALUES), max_size=3))
    single = draw(st.booleans())
    w1, w2 = draw(ws), draw(ws)
    q = _quote(value, single)
    qs = ",".join(w1 + _quote(v, single) + w2 for v in values)
    text = {
        "eq": f"{key}{w1}=={w2}{q}",
        "ne": f"{key}{w1}!={w2}{q}",
        "has": f"has({w1}{key}{w2})",
        "in": f"{key} in{w1}{{{qs}}}",
        "notin": f"{key} not{draw(ws)}in{w1}{{{qs}}}",
        "contains": f"{key} contains {q}",
        "starts": f"{key} starts{draw(ws)}with{w2}{q}",
        "ends": f"{key} ends{draw(ws)}with{w2}{q}",
        "all": f"all({w1})",
        "global": "global()",
    }[op]
    return (op, key, value, frozenset(values)), text


def expr(depth: int):
    if depth == 0:
        return leaf()
    sub = expr(depth - 1)

    @st.composite
    def node(draw):
        kind = draw(st.sampled_from(["leaf", "not", "and", "or", "paren"]))
        if kind == "leaf":
            return draw(leaf())
        if kind == "not":
            ast, text = draw(sub)
            # The operand is parenthesised so that "!" applies to all of it.
            return ("not", ast), f"!{draw(ws)}({text})"
        if kind == "paren":
            ast, text = draw(sub)
            return ast, f"({draw(ws)}{text}{draw(ws)})"
        parts = draw(st.lists(sub, min_size=2, max_size=3))
        op = "&&" if kind == "and" else "||"
        return (kind, tuple(p[0] for p in parts)), f" {op} ".join(f"({t})" for _, t in parts)

    return node()


def reference(ast, labels: dict[str, str]) -> bool:
    kind = ast[0]
    if kind == "not":
        return not reference(ast[1], labels)
    if kind == "and":
        return all(reference(a, labels) for a in ast[1])
    if kind == "or":
        return any(reference(a, labels) for a in ast[1])
    op, key, value, values = ast
    present = key in labels
    got = labels.get(key)
    return {
        "eq": present and got == value,
        "ne": not (present and got == value),
        "has": present,
        "in": present and got in values,
        "notin": not (present and got in values),
        "contains": present and value in got,
        "starts": present and got.startswith(value),
        "ends": present and got.endswith(value),
        "all": True,
        "global": True,
    }[op]


label_maps = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@settings(max_examples=400, deadline=None)
@given(expr(3), st.lists(label_maps, min_size=1, max_size=5))
def test_compiled_matches_reference(case, label_sets) -> None:
    ast, text = case
    selector = parse(text)
    for labels in label_sets:
        assert selector.matches(labels) == reference(ast, labels), (text, labels)


@settings(max_examples=400, deadline=None)
@given(expr(3))
def test_canonical_form_is_a_fixpoint(case) -> None:
    _, text = case
    canonical = parse(text).canonical
    reparsed = parse_ast(canonical)
    assert reparsed.canonical() == canonical
    assert parse(canonical).uid == parse(text).uid
