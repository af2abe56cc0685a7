"""Depth-aware fuzzing: JSON values, wire frames and gob messages nested around each bound.

Every bound is checked on both sides, at depths drawn with weight near the bound: the 100-level
bound on datastore JSON (`typha/jsonlimit.py`), msgpack's 1,024 levels on the wire, the 8 user
types of a gob message (docs/protocol.md 8.7). The generators (`deepvalues.py`) know the true
depth of what they build, so each test says exactly which side of the bound it is on.

Each example builds and parses values up to thousands of levels deep (about 30 ms), so these run
a twentieth of the fuzz budget: 150 examples each in `make test`, 5,000 in `make fuzz`
(TYPHA_FUZZ_EXAMPLES=100000), or TYPHA_FUZZ_DEEP_EXAMPLES.
"""

from __future__ import annotations

import json
import os
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typha import jsonlimit
from typha.cache.feed import encode_update
from typha.protocol import ProtocolError, decode_payload, frame
from typha.protocol.codec import encode_kvs_payload
from typha.protocol.errors import MalformedFrame
from typha.protocol.gob import ClientHello as GobClientHello
from typha.protocol.gob import GobDecoder
from typha.protocol.gob.decoder import DEFAULT_MAX_DEPTH as GOB_MAX_DEPTH
from typha.protocol.messages import KVKind, KVs
from typha.sync.base import Update
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.k8s import k8s_to_updates

from .budget import BUDGET, FUZZ
from .common import (
    BASE_KEYS,
    ETCD,
    K8S,
    etcd_value_reaches_clients,
    render_with,
    session_after_hello,
)
from .deepvalues import deep_gob_hello, deep_json, deep_msgpack, embed_json

DEEP = settings(
    FUZZ, max_examples=int(os.environ.get("TYPHA_FUZZ_DEEP_EXAMPLES", max(BUDGET // 20, 50)))
)
MSGPACK_MAX_DEPTH = 1024  # msgpack's C unpacker stack; the packer's limit is the same
KVS_FRAME_LEVELS = 3  # a value sits in [type, …, [[key, value]]]: three containers above it


def _near(*bounds: int, top: int) -> st.SearchStrategy[int]:
    """Depths from 0 to ``top``, half of them within 3 of one of ``bounds``."""
    close = st.sampled_from(bounds).flatmap(lambda b: st.integers(max(0, b - 3), b + 3))
    return st.one_of(close, st.integers(0, top))


SEEDS = st.integers(0, 2**32 - 1)


# --- datastore JSON ------------------------------------------------------------------------------


@DEEP
@given(SEEDS, _near(jsonlimit.MAX_DEPTH, 1000, top=3000))
def test_the_json_depth_bound_is_exact(seed: int, depth: int) -> None:
    """Brackets inside strings, siblings beside the deep path: the check on raw text counts the
    depth exactly, and ``loads`` refuses exactly what is deeper than the bound."""
    text, true_depth = deep_json(random.Random(seed), depth)
    too_deep = true_depth > jsonlimit.MAX_DEPTH
    assert jsonlimit.depth_exceeds(text) is too_deep
    if too_deep:
        with pytest.raises(jsonlimit.TooDeep):
            jsonlimit.loads(text)
    else:
        assert jsonlimit.nesting_depth(jsonlimit.loads(text)) == true_depth


@DEEP
@given(st.integers(0, len(ETCD) - 1), SEEDS, _near(jsonlimit.MAX_DEPTH - 3, 1000, top=2000))
def test_deep_etcd_values_are_refused_or_convert(index: int, seed: int, depth: int) -> None:
    """A deep value anywhere in a real resource: refused at the door past the bound (the key is
    invalid), otherwise converted or ``InvalidResource``, and the node client takes the result."""
    key, raw = ETCD[index]
    rng = random.Random(seed)
    inner, inner_depth = deep_json(rng, depth)
    text, true_depth = embed_json(json.loads(raw), rng, inner, inner_depth)
    if true_depth > jsonlimit.MAX_DEPTH:
        with pytest.raises(jsonlimit.TooDeep):
            jsonlimit.loads(text)
        return
    etcd_value_reaches_clients(key, jsonlimit.loads(text))


@DEEP
@given(st.integers(0, len(K8S) - 1), SEEDS, _near(jsonlimit.MAX_DEPTH, 1000, top=3000))
def test_a_deep_kubernetes_object_costs_only_itself_in_a_list_page(
    index: int, seed: int, depth: int
) -> None:
    """One deep object in a list page: the page decodes, the other objects are intact, the deep
    one keeps its name; marked too deep only if it is; unmarked and within the bound, its
    conversion raises only ``InvalidResource``, and what it produces the feed either encodes or
    refuses cleanly."""
    rng = random.Random(seed)
    obj = K8S[index]
    inner, inner_depth = deep_json(rng, depth)
    deep_text, true_depth = embed_json(obj, rng, inner, inner_depth)
    others = [K8S[(index + 1) % len(K8S)], K8S[(index + 2) % len(K8S)]]
    page = (
        '{"kind": "List", "items": ['
        + ", ".join([json.dumps(others[0]), deep_text, json.dumps(others[1])])
        + "]}"
    )
    items = jsonlimit.loads_marking(page)["items"]
    assert [items[0], items[2]] == others
    deep = items[1]
    assert deep["metadata"]["name"] == obj["metadata"]["name"]
    if jsonlimit.TOO_DEEP_KEY in deep:
        assert true_depth > jsonlimit.MAX_DEPTH
        return
    try:
        updates = k8s_to_updates(deep)
    except InvalidResource:
        return
    except RecursionError:
        # Past the bound but within the C decoder's reach, a converter that copies the object
        # (a CRD's `copy.deepcopy`) may recurse too deep: the datastore's per-object guard
        # makes that object invalid (docs/faults.md, "Hostile cases"). Within the bound, never.
        assert true_depth > jsonlimit.MAX_DEPTH
        return
    sendable = []
    for u in updates:
        try:
            encode_update(u)
        except ValueError:  # deeper than msgpack takes: the feed deletes that key
            continue
        sendable.append((u.key, u.value))
    render_with(sendable)


# --- msgpack frames ------------------------------------------------------------------------------


@DEEP
@given(SEEDS, _near(MSGPACK_MAX_DEPTH - KVS_FRAME_LEVELS, MSGPACK_MAX_DEPTH, top=1500))
def test_the_encoder_refuses_exactly_what_msgpack_cannot_nest(seed: int, depth: int) -> None:
    _, value = deep_msgpack(random.Random(seed), depth)
    update = Update(BASE_KEYS[seed % len(BASE_KEYS)], value)
    if depth > MSGPACK_MAX_DEPTH:
        with pytest.raises(ValueError):
            encode_update(update)
    else:
        assert msgpack.unpackb(encode_update(update).value_bytes, strict_map_key=False) == value


@DEEP
@given(SEEDS, _near(MSGPACK_MAX_DEPTH - KVS_FRAME_LEVELS, top=1500), st.booleans())
def test_deep_kvs_frames_decode_exactly_to_the_bound(
    seed: int, depth: int, header_only: bool
) -> None:
    """A KVs frame whose value nests ``depth`` levels: decoded whole up to msgpack's bound, a
    malformed frame past it; a client session raises only ``ProtocolError``; a decoded value
    reaches the node client, which at worst deletes that key."""
    raw_value, value = deep_msgpack(random.Random(seed), depth)
    key = BASE_KEYS[seed % len(BASE_KEYS)]
    payload = encode_kvs_payload(KVKind.DELTA, 2, 7, [b"\x92" + msgpack.packb(key) + raw_value])
    if depth + KVS_FRAME_LEVELS > MSGPACK_MAX_DEPTH:
        with pytest.raises(MalformedFrame):
            decode_payload(payload)
    else:
        msg = decode_payload(payload)
        assert isinstance(msg, KVs) and msg.kvs == ((key, value),)
        render_with([(key, value)])
    session = session_after_hello(header_only)
    try:
        session.receive_data(frame(payload))
        while session.next_event() is not None:
            pass
    except ProtocolError:
        pass


# --- gob -----------------------------------------------------------------------------------------


@DEEP
@given(SEEDS, _near(GOB_MAX_DEPTH - 1, top=40), st.lists(st.integers(0, 4000), max_size=4))
def test_gob_nesting_is_refused_exactly_past_the_bound(
    seed: int, depth: int, cuts: list[int]
) -> None:
    """A hello with a field nested ``depth`` user types deep (slices, arrays, structs, maps),
    fed in pieces: a default hello up to the bound (the hello itself is one level), a
    ``MalformedFrame`` past it."""
    data = deep_gob_hello(random.Random(seed), depth)
    dec = GobDecoder()
    out: list[object] = []
    pos = 0
    try:
        for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
            dec.feed(data[pos:cut])
            pos = max(pos, cut)
            while (m := dec.next_message()) is not None:
                out.append(m)
    except MalformedFrame as exc:
        # Past the bound: too deep, or (from 14 levels) too many type definitions for one
        # Envelope, which is refused before the value is read.
        assert depth + 1 > GOB_MAX_DEPTH
        assert "nested" in str(exc) or "spans more than 16" in str(exc)
        return
    assert depth + 1 <= GOB_MAX_DEPTH and out == [GobClientHello()]
