"""Deep selectors: Calico sets no nesting limit, so neither may the node client.

A 400-parentheses-deep selector used to raise RecursionError in the recursive-descent parser and
take every felix-client down with it. Parsing, the canonical form, evaluation and the label
index's restrictions now work at any depth; these tests check 400 and 5,000 levels, with match
results against a reference computed without recursion, and the iterative evaluator against the
compiled closures on the random selectors of test_selector.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_client.calc import selector as sel
from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.labelindex import LabelIndex
from felix_client.calc.selector import parse, parse_ast
from tests.calc.test_selector import expr, label_maps
from typha.model import keys
from typha.sync.convert import v3_to_updates

DEPTHS = [400, 5000]


def parens(depth: int) -> str:
    """``((((app == 'a'))))``: deep text, flat tree."""
    return "(" * depth + "app == 'a'" + ")" * depth


def alternating(depth: int) -> str:
    """``!((has(k{n-1}) && (has(k{n-2}) || !(… app == 'a' …))))``: a tree ``depth`` levels
    deep mixing AND, OR and NOT."""
    text = "app == 'a'"
    for k in range(depth):
        step = k % 3
        if step == 0:
            text = f"(has(k{k}) || {text})"
        elif step == 1:
            text = f"(has(k{k}) && {text})"
        else:
            text = f"!({text})"
    return text


def alternating_reference(depth: int, labels: dict[str, str]) -> bool:
    value = labels.get("app") == "a"
    for k in range(depth):
        has = f"k{k}" in labels
        value = (has or value, has and value, not value)[k % 3]
    return value


def label_sets(depth: int) -> list[dict[str, str]]:
    rng = random.Random(depth)
    every_key = {f"k{k}": "" for k in range(depth)}
    odd_keys = {f"k{k}": "" for k in range(1, depth, 2)}
    even_keys = {f"k{k}": "" for k in range(0, depth, 2)}
    return [
        even_keys,
        {**even_keys, "app": "a"},
        {},
        {"app": "a"},
        {"app": "b"},
        {**every_key, "app": "a"},
        {**odd_keys, "app": "a"},
        {**odd_keys},
        {"k0": "", "app": "a"},
        {f"k{depth - 1}": ""},
    ] + [
        # Random subsets of the keys, from the last 12 levels only (the outer ones decide most).
        {f"k{k}": "" for k in range(depth - 12, depth) if rng.random() < 0.5}
        | ({"app": "a"} if rng.random() < 0.5 else {})
        for _ in range(40)
    ]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_parentheses_parse_and_match(depth: int) -> None:
    selector = parse(parens(depth))
    assert selector.canonical == 'app == "a"'
    assert selector.matches({"app": "a"}) and not selector.matches({"app": "b"})
    with pytest.raises(sel.SelectorParseError, match="expected '\\)'"):
        parse(parens(depth)[:-1])  # one ")" missing, still a parse error, not a crash


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_trees_match_like_the_reference(depth: int) -> None:
    text = alternating(depth)
    selector = parse(text)
    for labels in label_sets(depth):
        assert selector.matches(labels) == alternating_reference(depth, labels), labels
    # Both outcomes occur (the reference is not constant).
    outcomes = {alternating_reference(depth, labels) for labels in label_sets(depth)}
    assert outcomes == {True, False}
    # The canonical form re-parses to itself, at depth too.
    assert parse_ast(selector.canonical).canonical() == selector.canonical
    assert parse(selector.canonical).uid == selector.uid
    # No positive restriction is derived from so deep a tree: the index tests every item.
    assert sel.restrictions(selector.root) == []


@pytest.mark.parametrize("depth", DEPTHS)
def test_label_index_with_a_deep_selector(depth: int) -> None:
    index = LabelIndex()
    selector = parse(alternating(depth))
    index.update_selector(selector.uid, selector)
    expected = set()
    for i, labels in enumerate(label_sets(depth)):
        index.update_item(f"item{i}", labels)
        if alternating_reference(depth, labels):
            expected.add(f"item{i}")
    assert expected and set(index.matches(selector.uid)) == expected


def deep_policy(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "selector": selector,
            "ingress": [{"action": "Allow", "source": {"selector": selector}}],
        },
    }


@pytest.mark.parametrize("shape", ["parens", "tree"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_typha_accepts_and_the_node_client_enforces_a_deep_policy(depth: int, shape: str) -> None:
    """End to end through both sides' code: Typha's converter keeps the selector as written
    (Calico has no limit), and the node client renders the policy for a matching endpoint."""
    if shape == "parens":
        text, matching, other = parens(depth), {"app": "a"}, {"app": "b"}
    else:
        text = alternating(depth)
        matching = next(ls for ls in label_sets(depth) if alternating_reference(depth, ls))
        other = next(ls for ls in label_sets(depth) if not alternating_reference(depth, ls))
    updates = v3_to_updates(deep_policy("deep", text))
    policy = next(u for u in updates if u.key.startswith("/calico/v1/policy/"))
    assert text in repr(policy.value)
    for labels, applies in ((matching, True), (other, False)):
        engine = CalcEngine("n1")
        wep = keys.workload_endpoint_key("n1", "k8s", "ns/p", "eth0")
        value = {
            "state": "active",
            "name": "cali1",
            "mac": "ee:ee:ee:ee:ee:ee",
            "profile_ids": [],
            "ipv4_nets": ["10.0.1.5/32"],
            "labels": labels,
        }
        engine.apply_updates([(policy.key, policy.value), (wep, value)])
        engine.snapshot_done()
        engine.flush()
        assert engine.calc_failures == 0
        # The policy's inbound chain is rendered for the endpoint exactly when it matches.
        assert ("cali-pi-" in render_files(engine.state())["iptables-filter"]) is applies


@settings(max_examples=400, deadline=None)
@given(expr(3), st.lists(label_maps, min_size=1, max_size=5))
def test_iterative_evaluator_agrees_with_the_compiled_closures(case, labels_list) -> None:
    _, text = case
    selector = parse(text)
    iterative = sel._IterativeMatcher(selector.root)
    for labels in labels_list:
        assert iterative(labels) == selector.matches(labels), (text, labels)
