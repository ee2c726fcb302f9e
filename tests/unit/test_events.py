"""Envelope and payload round trips, and every way a message can be refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.amounts import U128_MAX
from daemons.core.events import (
    TOPICS,
    EventDecodeError,
    ExecuteTrade,
    MarketPrice,
    Producer,
    SwapDemand,
    TradeDecision,
    decode,
    encode,
    link_values,
    new_event,
)
from tests.samples import sample_payloads

PRODUCER = Producer(service="test", instance="t1")


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_topic_round_trips(topic: str) -> None:
    payload = sample_payloads()[topic]
    event = new_event(payload, producer=PRODUCER, pair="BTC/EURe", correlation_id="q-1")
    assert event.event_type == topic
    assert event.schema_version == TOPICS[topic].schema_version
    back = decode(topic, encode(event))
    assert back == event
    assert back.payload == payload


def test_money_is_a_string_on_the_wire() -> None:
    payload = sample_payloads()["norm.swap_demand"]
    wire = orjson.loads(encode(new_event(payload, producer=PRODUCER, pair="BTC/EURe")))
    assert wire["payload"]["fixed_amount"] == "100000"
    price = sample_payloads()["ref.market_price"]
    wire = orjson.loads(encode(new_event(price, producer=PRODUCER, pair="BTC/EURe")))
    assert wire["payload"]["bid"] == "91234.5"
    assert isinstance(wire["payload"]["fair_rate_buy_btc"], str)


@pytest.mark.parametrize("bad", [1.5, "1.5", "-1", "", " 1", "1e3", True, str(U128_MAX + 1), None, "١٢"])
def test_u128_refuses_non_base_unit_amounts(bad: object) -> None:
    data = sample_payloads()["norm.swap_demand"].model_dump()
    data["fixed_amount"] = bad
    with pytest.raises(ValueError):
        SwapDemand.model_validate(data)


def test_decimal_refuses_float_and_nan() -> None:
    data = sample_payloads()["ref.market_price"].model_dump()
    for bad in (91234.5, "NaN", "Infinity", "abc"):
        data["mid"] = bad
        with pytest.raises(ValueError):
            MarketPrice.model_validate(data)


@given(st.integers(min_value=0, max_value=U128_MAX))
def test_u128_round_trips_any_amount(amount: int) -> None:
    payload = sample_payloads()["cmd.execute_trade"].model_copy(update={"amount_in": amount})
    event = new_event(payload, producer=PRODUCER, pair="BTC/EURe")
    assert decode("cmd.execute_trade", encode(event)).payload.amount_in == amount


@given(st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**6), max_value=10**6))
def test_decimal_round_trips_exactly(value: Decimal) -> None:
    payload = sample_payloads()["decision.trade_decision"].model_copy(update={"gross_edge_pct": value})
    event = new_event(payload, producer=PRODUCER, pair="BTC/EURe")
    assert decode("decision.trade_decision", encode(event)).payload.gross_edge_pct == value


def _wire(topic: str) -> dict:
    payload = sample_payloads()[topic]
    return orjson.loads(encode(new_event(payload, producer=PRODUCER, pair="BTC/EURe")))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda w: w.pop("event_id"), "event_id"),
        (lambda w: w.update(event_id="not-a-uuid"), "event_id"),
        (lambda w: w.update(event_type="norm.swap_demand"), "does not match topic"),
        (lambda w: w.update(schema_version=2), "unsupported schema_version"),
        (lambda w: w.update(occurred_at="2026-11-24T12:00:00"), "occurred_at"),
        (lambda w: w["payload"].update(amount_in=12.5), "payload.amount_in"),
        (lambda w: w["payload"].update(direction="SIDEWAYS"), "payload.direction"),
        (lambda w: w["payload"].update(surprise=1), "payload.surprise"),
        (lambda w: w.update(extra_field=1), "extra_field"),
    ],
)
def test_decode_names_what_is_wrong(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    wire = _wire("cmd.execute_trade")
    mutate(wire)
    with pytest.raises(EventDecodeError) as info:
        decode("cmd.execute_trade", orjson.dumps(wire))
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{not json", "invalid JSON"), (b"[1,2]", "not a JSON object"), (None, "empty message"), (b"", "invalid JSON")],
)
def test_decode_refuses_garbage(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode("exec.trade_result", raw)
    assert reason in info.value.reason


def test_decode_refuses_unknown_topic() -> None:
    with pytest.raises(EventDecodeError, match="unknown topic"):
        decode("no.such.topic", b"{}")


def test_link_values_follow_the_table_columns() -> None:
    decision = sample_payloads()["decision.trade_decision"]
    event = new_event(decision, producer=PRODUCER, pair="BTC/EURe")
    assert link_values(event) == (
        decision.decision_id,
        decision.quote_id,
        decision.price_event_id,
        decision.inventory_snapshot_id,
        "reject",
        "edge_below_threshold",
    )


def test_timestamps_must_carry_a_zone() -> None:
    data = sample_payloads()["cmd.execute_trade"].model_dump()
    data["answer_by"] = datetime(2026, 11, 24, 12, 0, 0)  # naive
    with pytest.raises(ValueError):
        ExecuteTrade.model_validate(data)
    data["answer_by"] = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert ExecuteTrade.model_validate(data).answer_by.tzinfo is not None


def test_decision_requires_its_audit_fields() -> None:
    data = sample_payloads()["decision.trade_decision"].model_dump()
    del data["decision_reason"]
    with pytest.raises(ValueError):
        TradeDecision.model_validate(data)


def test_event_ids_are_unique() -> None:
    payload = sample_payloads()["exec.trade_result"]
    ids = {new_event(payload, producer=PRODUCER, pair="BTC/EURe").event_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(isinstance(i, uuid.UUID) for i in ids)
