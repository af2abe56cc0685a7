"""ResourceExpander's shortcut for a source that produces one key gives what its general
algorithm gives: the same updates, and the same memory of what each source produced (seen
in later deletions and shrinking updates)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from typha.sync.base import ResourceExpander, Update


class Reference:
    """The general algorithm alone: every output set compared as a set."""

    def __init__(self) -> None:
        self.outputs: dict[str, frozenset[str]] = {}

    def expand(self, source: str, produced: list[Update]) -> list[Update]:
        new_keys = frozenset(u.key for u in produced if u.value is not None)
        out = list(produced)
        for gone in self.outputs.get(source, frozenset()) - new_keys:
            if not any(u.key == gone for u in produced):
                out.append(Update(gone, None))
        if new_keys:
            self.outputs[source] = new_keys
        else:
            self.outputs.pop(source, None)
        return out

    def delete(self, source: str) -> list[Update]:
        return [Update(k, None) for k in sorted(self.outputs.pop(source, frozenset()))]


_UPDATE = st.builds(Update, st.sampled_from("abc"), st.sampled_from([None, 1, {"v": 2}]))
_OP = st.tuples(
    st.sampled_from(["expand", "expand", "expand", "delete"]),
    st.sampled_from(["s1", "s2"]),
    st.lists(_UPDATE, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_OP, max_size=30))
def test_shortcut_matches_the_general_algorithm(ops: list[tuple[str, str, list[Update]]]) -> None:
    got, want = ResourceExpander(), Reference()
    for op, source, produced in ops:
        if op == "delete":
            assert got.delete(source) == want.delete(source)
        else:
            assert got.expand(source, list(produced)) == want.expand(source, list(produced))
        assert got.sources() == set(want.outputs)


def test_one_key_then_another_deletes_the_first() -> None:
    """Positive control of the shortcut's own branch: a new key for a known source is not the
    shortcut's case and still deletes the old key; the same key again is."""
    ex = ResourceExpander()
    assert ex.expand("s", [Update("a", 1)]) == [Update("a", 1)]
    assert ex.expand("s", [Update("a", 2)]) == [Update("a", 2)]
    assert ex.expand("s", [Update("b", 1)]) == [Update("b", 1), Update("a", None)]
    assert ex.delete("s") == [Update("b", None)]
