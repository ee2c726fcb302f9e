"""The history-writer's cheaper decoder against `events.decode`: for any message, both accept it
with the same envelope and link values, or both refuse it with the same reason.

Messages: arbitrary bytes and JSON, valid events with random mutations, and valid events with one
value (an amount most of all) replaced by an awkward number or number-like string.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.events import TOPICS, EventDecodeError, Producer, decode, encode, new_event
from daemons.history_writer.fastdecode import MIRRORS, decode_for_history
from daemons.history_writer.store import _LINKS
from tests.fuzz.strategies import GARBAGE_BYTES, JSON, dumps, mutated
from tests.samples import sample_payloads

TOPIC_NAMES = sorted(TOPICS)
PRODUCER = Producer(service="fuzz", instance="f1")

# what amounts and rates look like, and what they must not be; each is tried in every field
AWKWARD: list[object] = [
    0,
    2**64,
    2**128 - 1,
    2**128,
    -1,
    True,
    False,
    1.0,
    1.5,
    -0.0,
    None,
    [],
    {},
    "0",
    "00",
    "007",
    "1" * 38,
    "9" * 38,
    "9" * 39,
    str(2**128 - 1),
    str(2**128),
    "1" * 60,
    "1" * 61,
    "-1",
    "+1",
    " 1",
    "1 ",
    "1_000",
    "0x10",
    "١٢٣",
    "²",
    "",
    "1.5",
    "-1.5",
    ".5",
    "5.",
    "1e5",
    "1E5",
    "1E+5",
    "1E-8",
    "-0",
    "-0.0",
    "0E-8",
    "1E9999",
    "1E-9999",
    "1E99999",
    "NaN",
    "Infinity",
    "-Infinity",
    "sNaN",
    "1.5.5",
    "1" * 61 + ".5",
    "0." + "0" * 60 + "1",
    "e5",
    "1e",
    "--1",
]
NUMBER_LIKE = st.one_of(
    st.integers(min_value=-(2**130), max_value=2**130),
    st.sampled_from(AWKWARD),
    st.from_regex(r"-?[0-9]{1,70}(\.[0-9]{0,70})?([eE][-+]?[0-9]{1,6})?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)


def valid_doc(topic: str) -> Any:
    return json.loads(encode(new_event(sample_payloads()[topic], producer=PRODUCER, pair="BTC/EURe")))  # type: ignore[arg-type]


def outcome(decoder: Any, topic: str, raw: bytes | None) -> tuple[str, object]:
    try:
        e = decoder(topic, raw)
    except EventDecodeError as exc:
        return "refused", exc.reason
    return "accepted", (
        e.event_id,
        e.event_type,
        e.schema_version,
        e.occurred_at,
        e.observed_at,
        e.producer.service,
        e.producer.instance,
        e.pair,
        e.correlation_id,
        e.causation_id,
        _LINKS[topic](e.payload),
    )


def assert_same(topic: str, raw: bytes | None) -> None:
    assert outcome(decode_for_history, topic, raw) == outcome(decode, topic, raw)


def leaves(doc: Any) -> list[list[Any]]:
    out: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, [*path, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, i])
        else:
            out.append(path)

    walk(doc, [])
    return out


def replaced(doc: Any, path: list[Any], value: object) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


@st.composite
def one_value_replaced(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with one leaf replaced by a number-like value."""
    return replaced(doc, draw(st.sampled_from(leaves(doc))), draw(NUMBER_LIKE))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(TOPIC_NAMES + ["no.such.topic"]), st.one_of(st.none(), GARBAGE_BYTES))
def test_arbitrary_bytes(topic: str, raw: bytes | None) -> None:
    assert_same(topic, raw)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(TOPIC_NAMES), JSON)
def test_arbitrary_json(topic: str, doc: object) -> None:
    assert_same(topic, dumps(doc).encode())


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(TOPIC_NAMES), st.sampled_from(TOPIC_NAMES))
def test_mutated_valid_events(data: st.DataObject, produced: str, read_as: str) -> None:
    doc = data.draw(mutated(valid_doc(produced), max_mutations=4))
    assert_same(read_as, dumps(doc).encode())


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(TOPIC_NAMES))
def test_valid_events_with_one_awkward_number(data: st.DataObject, topic: str) -> None:
    doc = data.draw(one_value_replaced(valid_doc(topic)))
    assert_same(topic, dumps(doc).encode())


def test_every_field_with_every_awkward_value() -> None:
    for topic in TOPIC_NAMES:
        doc = valid_doc(topic)
        for path in leaves(doc):
            for value in AWKWARD:
                assert_same(topic, dumps(replaced(doc, path, value)).encode())


def test_valid_events_take_the_fast_path() -> None:
    # else the mirror saves nothing: every sample must validate without falling back to decode()
    for topic in TOPIC_NAMES:
        raw = encode(new_event(sample_payloads()[topic], producer=PRODUCER, pair="BTC/EURe"))  # type: ignore[arg-type]
        assert type(decode_for_history(topic, raw)) is MIRRORS[topic]
        assert_same(topic, raw)
