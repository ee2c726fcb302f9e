"""Fuzz `kraken.parse_message`: anything malformed raises `KrakenParseError` (a ValueError) and
nothing else; a valid ticker frame round-trips with every price an exact `Decimal`."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.venues.kraken import KrakenParseError, TickerMessage, parse_message
from tests.fuzz.strategies import GARBAGE_BYTES, GARBAGE_TEXT, JSON, dumps, mutated

prices = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("10000000"), places=8, allow_nan=False, allow_infinity=False
)


def classify(raw: str | bytes) -> object:
    try:
        return parse_message(raw)
    except KrakenParseError:
        return None


def ticker(bid: Decimal, ask: Decimal, qty: Decimal, msg_type: str = "update") -> str:
    # Kraken sends prices as JSON numbers; write the Decimal's exact text, not a float's.
    data = (
        f'{{"symbol":"BTC/EUR","bid":{bid},"bid_qty":{qty},"ask":{ask},"ask_qty":{qty},'
        f'"last":{bid},"timestamp":"2026-01-01T00:00:00.123456Z"}}'
    )
    return f'{{"channel":"ticker","type":"{msg_type}","data":[{data}]}}'


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.one_of(GARBAGE_TEXT, GARBAGE_BYTES))
def test_garbage_raises_only_the_typed_error(raw: str | bytes) -> None:
    classify(raw)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(JSON)
def test_any_json_raises_only_the_typed_error(doc: object) -> None:
    classify(dumps(doc))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(["ticker", "book", "status", "ack", "pong"]))
def test_mutated_valid_frames_raise_only_the_typed_error(data: st.DataObject, kind: str) -> None:
    valid = {
        "ticker": json.loads(ticker(Decimal("60000.1"), Decimal("60001.2"), Decimal("0.5"))),
        "book": {
            "channel": "book",
            "type": "update",
            "data": [
                {
                    "symbol": "BTC/EUR",
                    "bids": [{"price": 1, "qty": 2}],
                    "asks": [],
                    "checksum": 123,
                    "timestamp": "2026-01-01T00:00:00Z",
                }
            ],
        },
        "status": {"channel": "status", "type": "update", "data": [{"system": "online", "connection_id": 2**70}]},
        "ack": {
            "method": "subscribe",
            "success": True,
            "req_id": 1,
            "result": {"channel": "ticker", "symbol": "BTC/EUR"},
            "time_in": "2026-01-01T00:00:00Z",
            "time_out": "2026-01-01T00:00:00Z",
        },
        "pong": {"method": "pong", "req_id": 4, "time_in": "2026-01-01T00:00:00Z"},
    }[kind]
    classify(dumps(data.draw(mutated(valid))))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(prices, prices, prices, st.sampled_from(["snapshot", "update"]))
def test_valid_ticker_round_trips_as_exact_decimals(bid: Decimal, ask: Decimal, qty: Decimal, kind: str) -> None:
    message = parse_message(ticker(bid, ask, qty, kind))
    assert isinstance(message, TickerMessage) and message.type == kind
    [tick] = message.data
    assert (tick.bid, tick.ask, tick.bid_qty, tick.ask_qty, tick.last) == (bid, ask, qty, qty, bid)
    assert all(isinstance(v, Decimal) for v in (tick.bid, tick.ask, tick.bid_qty))
    assert tick.timestamp is not None and tick.timestamp.utcoffset() is not None


def test_float_price_via_model_is_refused() -> None:
    # the property above would pass vacuously if prices could silently be floats
    with pytest.raises(ValueError):
        TickerMessage.model_validate(
            {
                "channel": "ticker",
                "type": "update",
                "data": [{"symbol": "BTC/EUR", "bid": 1.5, "bid_qty": 1, "ask": 2, "ask_qty": 1}],
            }
        )
