"""Shared hypothesis strategies for the fuzz suite: arbitrary JSON, JSON text and mutations of
valid documents (a key removed, a value replaced by arbitrary JSON, or a wrong type)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Numbers that break naive parsers: huge ints, u128 edges, negatives, bools (an int subclass).
EDGE_INTS = st.sampled_from([0, -1, 1, 2**53 + 1, 2**64, 2**128 - 1, 2**128, 2**200, -(2**128)])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    EDGE_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e999", "NaN", "Infinity", "١٢٣", "²", "9" * 5000, "0x10", " 1", "1.5"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=25,
)

# Raw bytes/text that are not, or only almost, JSON: truncations, deep nesting, invalid UTF-8.
GARBAGE_TEXT = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "",
            "{",
            "[" * 100_000,
            '{"a":' * 50_000,
            "null",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e99999",
            "9" * 5000,
            '{"a": ' + "9" * 5000 + "}",
            '{"a": 1e99999}',
            '{"a": NaN}',
            "\ufeff{}",
            '"\ud800"',
            "[1,]",
        ]
    ),
)
GARBAGE_BYTES = st.one_of(st.binary(max_size=200), GARBAGE_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")))


def dumps(obj: Any) -> str:
    # Arbitrary JSON may hold ints beyond the default 4300-digit str limit; write them anyway.
    return json.dumps(obj)


@st.composite
def mutated(draw: st.DrawFn, doc: Any, max_mutations: int = 3) -> Any:
    """`doc` with one to a few random mutations at random paths."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_mutations))):
        node = doc
        path: list[Any] = []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append(key)
            node = node[key]
        if not path:
            if isinstance(doc, dict) and doc:
                key = draw(st.sampled_from(sorted(doc)))
                if draw(st.booleans()):
                    del doc[key]
                else:
                    doc[key] = draw(JSON)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "wrong_type"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "wrong_type":
            parent[path[-1]] = draw(st.sampled_from([None, True, 1.5, -1, [], {}, "x", 2**129]))
        else:
            parent[path[-1]] = draw(JSON)
    return doc
