"""near-intents-ingest's pure logic: directions, classification, repeats, normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID, ActivePair
from daemons.core.repeats import RepeatTracker
from daemons.near_intents_ingest.classify import classify, swap_demand
from daemons.venues.near_intents.relay_ws import QuoteRequest

PAIR = ActivePair(NBTC_ID)


def quote(
    asset_in: str, asset_out: str, *, amount_in: int | None = 10**8, amount_out: int | None = None, quote_id: str = "q1"
) -> QuoteRequest:
    return QuoteRequest(
        quote_id=quote_id,
        asset_in=asset_in,
        asset_out=asset_out,
        exact_amount_in=amount_in,
        exact_amount_out=amount_out,
        min_deadline_ms=60000,
        metadata={"partner_id": "p"},
        subscription="s",
        seq=None,
        envelope="event",
        raw="{}",
        received_at=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
    )


def test_direction_is_named_from_what_quoteloop_gives() -> None:
    # the taker pays EURe and wants BTC: quoteloop gives BTC
    assert swap_demand(PAIR, quote(EURE_ID, NBTC_ID), repeat=False).direction == "SELL_BTC"
    assert swap_demand(PAIR, quote(NBTC_ID, EURE_ID), repeat=False).direction == "BUY_BTC"


def test_other_pairs_and_the_inactive_btc_are_other() -> None:
    assert classify(PAIR, quote(EURE_ID, NBTC_ID)) == "active_pair"
    assert classify(PAIR, quote(EURE_ID, POA_BTC_ID)) == "other_pair"  # legacy BTC is not the active one
    assert classify(PAIR, quote("nep141:wrap.near", EURE_ID)) == "other_pair"
    assert classify(PAIR, quote(EURE_ID, EURE_ID)) == "other_pair"
    with pytest.raises(ValueError):
        swap_demand(PAIR, quote("nep141:wrap.near", EURE_ID), repeat=False)


def test_normalised_fields_keep_base_units_and_decimals() -> None:
    d = swap_demand(PAIR, quote(NBTC_ID, EURE_ID, amount_in=None, amount_out=123 * 10**18), repeat=True)
    assert (d.fixed_side, d.fixed_amount, d.asset_in_decimals, d.asset_out_decimals) == (
        "exact_amount_out",
        123 * 10**18,
        8,
        18,
    )
    assert d.repeat is True and d.partner == {"partner_id": "p"} and d.received_at.microsecond == 123456


def test_repeats_are_remembered_within_capacity() -> None:
    r = RepeatTracker(capacity=2)
    assert [r.seen_before(q) for q in ("a", "b", "a")] == [False, False, True]
    r.seen_before("c")  # evicts the least recently seen ("b")
    assert r.seen_before("b") is False
