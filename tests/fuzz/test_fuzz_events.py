"""Fuzz `events.decode` for every topic: arbitrary bytes, arbitrary JSON and mutated valid events
raise only `EventDecodeError`; every valid event round-trips through `encode`/`decode` unchanged."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.events import TOPICS, EventDecodeError, Producer, decode, encode, new_event
from tests.fuzz.strategies import GARBAGE_BYTES, JSON, dumps, mutated
from tests.samples import sample_payloads

TOPIC_NAMES = sorted(TOPICS)
PRODUCER = Producer(service="fuzz", instance="f1")


def valid_event(topic: str) -> bytes:
    return encode(new_event(sample_payloads()[topic], producer=PRODUCER, pair="BTC/EURe"))  # type: ignore[arg-type]


def try_decode(topic: str, raw: bytes | None) -> object:
    try:
        return decode(topic, raw)
    except EventDecodeError as exc:
        assert exc.reason
        return None


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(TOPIC_NAMES + ["no.such.topic"]), st.one_of(st.none(), GARBAGE_BYTES))
def test_arbitrary_bytes_raise_only_event_decode_error(topic: str, raw: bytes | None) -> None:
    try_decode(topic, raw)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(TOPIC_NAMES), JSON)
def test_arbitrary_json_raises_only_event_decode_error(topic: str, doc: object) -> None:
    try_decode(topic, dumps(doc).encode())


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(TOPIC_NAMES), st.sampled_from(TOPIC_NAMES))
def test_mutated_valid_events_raise_only_event_decode_error(data: st.DataObject, produced: str, read_as: str) -> None:
    doc = json.loads(valid_event(produced))
    event = try_decode(read_as, dumps(data.draw(mutated(doc, max_mutations=4))).encode())
    if event is not None:
        assert event.event_type == read_as  # type: ignore[attr-defined]


@settings(
    parent=settings.get_profile(
        "quoteloop-fuzz",
    ),
    max_examples=min(40, settings.get_profile("quoteloop-fuzz").max_examples),
)
@given(st.sampled_from(TOPIC_NAMES))
def test_valid_events_round_trip(topic: str) -> None:
    raw = valid_event(topic)
    event = decode(topic, raw)
    assert encode(event) == raw
    assert decode(topic, encode(event)) == event


def test_every_topic_has_a_sample() -> None:
    # the round-trip property is only as wide as the samples
    assert set(sample_payloads()) == set(TOPICS)
