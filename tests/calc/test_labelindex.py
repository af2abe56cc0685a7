"""The incremental label index equals a from-scratch evaluation, and does not scan needlessly."""

from __future__ import annotations

import random

from felix_client.calc.labelindex import LabelIndex
from felix_client.calc.selector import Selector, parse
from tests.calc.randcluster import SELECTORS

KEYS = ("app", "role", "tier", "kind", "pcns.team")
VALUES = ("a", "b", "c", "x", "net")


class Recorder:
    """Applies the index's callbacks to a match set, so the event stream itself is checked."""

    def __init__(self) -> None:
        self.matches: set[tuple[str, str]] = set()

    def started(self, sel_id, item) -> None:
        assert (sel_id, item) not in self.matches, "duplicate start"
        self.matches.add((sel_id, item))

    def stopped(self, sel_id, item) -> None:
        assert (sel_id, item) in self.matches, "stop without start"
        self.matches.remove((sel_id, item))


def effective(own: dict, parents: tuple, parent_labels: dict) -> dict:
    merged: dict = {}
    for p in parents:  # earlier parents win over later ones, own labels over all
        for k, v in parent_labels.get(p, {}).items():
            merged.setdefault(k, v)
    merged.update(own)
    return merged


def rand_labels(rng: random.Random) -> dict:
    return {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.5}


def test_incremental_equals_from_scratch() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        rec = Recorder()
        index = LabelIndex(rec.started, rec.stopped)
        items: dict[str, tuple[dict, tuple]] = {}
        parents: dict[str, dict] = {}
        selectors: dict[str, Selector] = {}
        for _ in range(400):
            op = rng.random()
            if op < 0.35:
                item = f"i{rng.randrange(25)}"
                own = rand_labels(rng)
                ps = tuple(rng.sample(["p1", "p2", "p3"], rng.randrange(0, 3)))
                items[item] = (own, ps)
                index.update_item(item, own, ps)
            elif op < 0.45 and items:
                item = rng.choice(sorted(items))
                del items[item]
                index.remove_item(item)
            elif op < 0.6:
                p = rng.choice(["p1", "p2", "p3"])
                if rng.random() < 0.2:
                    parents.pop(p, None)
                    index.update_parent_labels(p, None)
                else:
                    parents[p] = rand_labels(rng)
                    index.update_parent_labels(p, parents[p])
            elif op < 0.85:
                sid = f"s{rng.randrange(12)}"
                selectors[sid] = parse(rng.choice(SELECTORS))
                index.update_selector(sid, selectors[sid])
            elif selectors:
                sid = rng.choice(sorted(selectors))
                del selectors[sid]
                index.remove_selector(sid)
            expected = {
                (sid, item)
                for sid, sel in selectors.items()
                for item, (own, ps) in items.items()
                if sel.matches(effective(own, ps, parents))
            }
            assert rec.matches == expected, seed
            for sid in selectors:
                assert set(index.matches(sid)) == {i for s, i in expected if s == sid}
            for item, (own, ps) in items.items():
                assert dict(index.labels(item)) == effective(own, ps, parents)


def test_own_labels_override_parents_and_earlier_parents_win() -> None:
    index = LabelIndex()
    index.update_parent_labels("p1", {"a": "1", "b": "1"})
    index.update_parent_labels("p2", {"a": "2", "b": "2", "c": "2"})
    index.update_item("ep", {"b": "own"}, ("p1", "p2"))
    assert dict(index.labels("ep")) == {"a": "1", "b": "own", "c": "2"}


def counting(selector: Selector, counter: list[int]) -> Selector:
    inner = selector.matches

    def match(labels):
        counter[0] += 1
        return inner(labels)

    selector.matches = match
    return selector


def test_updates_do_not_scan_every_selector_or_item() -> None:
    index = LabelIndex()
    calls = [0]
    for i in range(200):
        sel = Selector(parse(f"app == 'app{i}' && role == 'r'").root)
        index.update_selector(f"s{i}", counting(sel, calls))
    for i in range(2000):
        index.update_item(f"ep{i}", {"app": f"app{i % 200}", "role": "r" if i % 2 else "q"})
    # Each item is evaluated only against the one selector its app label can satisfy.
    assert calls[0] == 2000
    assert len(index.matches("s1")) == 10
    calls[0] = 0
    index.update_item("ep1", {"app": "app7", "role": "r"})
    assert calls[0] == 1
    assert "ep1" in index.matches("s7") and "ep1" not in index.matches("s1")
    # A new selector only looks at candidates from the most selective restriction.
    calls[0] = 0
    sel = counting(Selector(parse("role == 'r' && app == 'app3'").root), calls)
    index.update_selector("new", sel)
    assert calls[0] == 10
    assert index.matches("new") == index.matches("s3")


def test_unrestricted_selectors_fall_back_to_scanning() -> None:
    index = LabelIndex()
    for i in range(50):
        index.update_item(f"ep{i}", {"app": "a"} if i % 2 else {})
    index.update_selector("neg", parse("!has(app)"))
    index.update_selector("all", parse("all()"))
    index.update_selector("ne", parse("app != 'a'"))
    assert len(index.matches("neg")) == 25
    assert len(index.matches("all")) == 50
    assert index.matches("ne") == index.matches("neg")
    index.update_item("ep1", {})
    assert "ep1" in index.matches("neg")


def test_or_restriction_and_in_sets() -> None:
    index = LabelIndex()
    index.update_item("x", {"role": "b"})
    index.update_item("y", {"tier": "c"})
    index.update_item("z", {"app": "q"})
    index.update_selector("or", parse("role == 'b' || tier == 'c'"))
    index.update_selector("in", parse("app in {'q', 'r'}"))
    index.update_selector("empty", parse("app in {}"))
    assert set(index.matches("or")) == {"x", "y"}
    assert set(index.matches("in")) == {"z"}
    assert not index.matches("empty")
    index.update_item("w", {"tier": "c", "app": "r"})
    assert set(index.matches("or")) == {"x", "y", "w"}
    assert set(index.matches("in")) == {"z", "w"}


def test_profile_label_change_reevaluates_inheritors_only() -> None:
    index = LabelIndex()
    index.update_selector("team", parse("pcns.team == 'x'"))
    for i in range(10):
        index.update_item(f"ep{i}", {}, ("kns.a",) if i < 5 else ("kns.b",))
    index.update_parent_labels("kns.a", {"pcns.team": "x"})
    assert set(index.matches("team")) == {f"ep{i}" for i in range(5)}
    index.update_parent_labels("kns.b", {"pcns.team": "x"})
    assert len(index.matches("team")) == 10
    index.update_parent_labels("kns.a", None)
    assert set(index.matches("team")) == {f"ep{i}" for i in range(5, 10)}
