"""Fuzzing what the datastore hands us: resource converters and the node client's calculation.

A broken datastore value must affect only its own key (DEVELOPERS.md): the converters may
raise nothing but ``InvalidResource`` (the datastores count it and treat the key as deleted;
any other exception is a converter bug, logged loudly), and whatever they do produce must be
something every node client can take without failing. Mutations are structure-aware
(tests/fuzz/jsonmutate.py) so they get past the JSON parser and into the converters.

`make test` runs a fixed, derandomized budget; `make fuzz` sets TYPHA_FUZZ_EXAMPLES=100000.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from felix_client.calc.selector import SelectorParseError, parse
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.etcd import convert_etcd_kv
from typha.sync.convert.k8s import k8s_to_updates

from .budget import BUDGET, FUZZ
from .common import (
    BASE,
    BASE_KEYS,
    ETCD,
    K8S,
    check_updates,
    etcd_value_reaches_clients,
    render_with,
)
from .deepselectors import deep_selector, random_labels
from .jsonmutate import mutate


def test_seeds_convert_and_render() -> None:
    """The positive control: every seed converts to updates, and the base state renders
    (with rules for node1's workloads), so mutations start from inputs that get far."""
    for key, raw in ETCD:
        assert convert_etcd_kv(key, json.loads(raw)), key
    for obj in K8S:
        assert k8s_to_updates(obj), obj["kind"]
    files = render_with([])
    assert any("cali-tw-" in text for text in files.values()), sorted(files)


@FUZZ
@given(st.integers(0, len(ETCD) - 1), st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_mutated_etcd_values_convert_or_raise_invalid_resource(
    index: int, seed: int, n: int
) -> None:
    key, raw = ETCD[index]
    etcd_value_reaches_clients(key, mutate(json.loads(raw), random.Random(seed), n))


@FUZZ
@given(st.integers(0, len(K8S) - 1), st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_mutated_kubernetes_objects_convert_or_raise_invalid_resource(
    index: int, seed: int, n: int
) -> None:
    obj = mutate(K8S[index], random.Random(seed), n)
    try:
        updates = k8s_to_updates(obj)
    except InvalidResource:
        return
    check_updates(updates)
    render_with([(u.key, u.value) for u in updates])


@FUZZ
@given(st.integers(0, len(BASE_KEYS) - 1), st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_node_client_survives_any_model_value(index: int, seed: int, n: int) -> None:
    """Another Typha (or a bug) may send a model value our converters would never make: the
    node client treats what it cannot parse as a deletion of that key, and keeps rendering."""
    key = BASE_KEYS[index]
    value = BASE[key]
    rng = random.Random(seed)
    if isinstance(value, dict | list):
        bad: Any = mutate(value, rng, n)
    else:
        bad = rng.choice([None, 0, -1, "", "garbage", [], {}, 2**64, "10.0.0.300"])
    render_with([(key, bad)])


SELECTOR_ALPHABET = "abcxyz_./-0123456789 '\"()!&|=<>{},"
VALID_SELECTORS = ["has(a)", "a == 'b'", "a in {'x', 'y'}", "!has(a) && b != 'c'", "all()"]
# Parentheses and negations weigh more in long texts, so that deep nesting is common.
DEEP_ALPHABET = SELECTOR_ALPHABET + "((((((!!!))))))"
# Mostly past the recursion limit of the old parser (~250 levels), sometimes far past it.
DEPTHS = st.one_of(st.integers(0, 400), st.integers(400, 5000))
# A 5,000-level selector takes ~0.1 s to parse, compile and evaluate: fewer of those.
FUZZ_DEEP = settings(FUZZ, max_examples=max(30, BUDGET // 30))


@st.composite
def mutated_deep_selector(draw: st.DrawFn) -> str:
    """A deep valid selector (up to 3,000 levels) with a few random cuts and insertions."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    text = deep_selector(rng, draw(DEPTHS)).text
    for _ in range(draw(st.integers(0, 4))):
        at = rng.randrange(len(text) + 1)
        if rng.random() < 0.5:
            text = text[:at] + text[at + rng.randint(1, 8) :]
        else:
            text = text[:at] + rng.choice(DEEP_ALPHABET) * rng.randint(1, 8) + text[at:]
    return text


@FUZZ
@given(
    st.one_of(
        st.text(SELECTOR_ALPHABET, max_size=40),
        st.sampled_from(VALID_SELECTORS),
    ),
    st.dictionaries(st.sampled_from("abcxyz"), st.sampled_from(["", "b", "x", "c"]), max_size=4),
)
def test_selectors_parse_or_raise_selector_errors(text: str, labels: dict[str, str]) -> None:
    try:
        selector = parse(text)
    except SelectorParseError:
        assert text not in VALID_SELECTORS  # the positive control: those always parse
        return
    assert isinstance(selector.matches(labels), bool)
    # The canonical form means the same thing.
    assert parse(selector.canonical).matches(labels) == selector.matches(labels)


@FUZZ_DEEP
@given(
    st.one_of(st.text(DEEP_ALPHABET, min_size=40, max_size=5000), mutated_deep_selector()),
    st.dictionaries(st.sampled_from("abcxyz"), st.sampled_from(["", "b", "x", "c"]), max_size=4),
)
def test_long_and_deep_selector_text_parses_or_raises_selector_errors(
    text: str, labels: dict[str, str]
) -> None:
    """Far beyond 40 characters: long random text, and deep valid selectors cut and spliced.
    Only SelectorParseError, never RecursionError."""
    test_selectors_parse_or_raise_selector_errors.hypothesis.inner_test(text, labels)


@FUZZ_DEEP
@given(st.integers(0, 2**32 - 1), DEPTHS)
def test_deep_selectors_mean_what_they_say(seed: int, depth: int) -> None:
    """Depth-aware: a random selector up to 5,000 levels deep (well past Python's recursion
    limit) parses, matches like its step-by-step reference, and its canonical form too."""
    rng = random.Random(seed)
    generated = deep_selector(rng, depth)
    selector = parse(generated.text)
    again = parse(selector.canonical)
    for _ in range(8):
        labels = random_labels(rng)
        expected = generated.expected(labels)
        assert selector.matches(labels) == expected, (generated.text[:200], labels)
        assert again.matches(labels) == expected
