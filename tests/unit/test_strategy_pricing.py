"""Pricing: both directions and both fixed sides, exact arithmetic, rounding in quoteloop's favour."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.strategy_engine.pricing import PricingError, gross_edge_pct, price

RATE = Decimal("60000")  # EURe per BTC
EDGE = Decimal("2.5")


def test_sell_btc_exact_in_gives_less_btc_for_the_eure_received() -> None:
    # taker pays 600 EURe (exact in), quoteloop gives BTC: fair is 0.01 BTC, with 2.5 % edge less
    c = price(
        direction="SELL_BTC",
        fixed_side="exact_amount_in",
        fixed_amount=600 * 10**18,
        btc_decimals=8,
        eure_decimals=18,
        fair_rate=RATE,
        target_edge_pct=EDGE,
    )
    assert c.amount_in == 600 * 10**18
    assert c.amount_out == 975609  # floor(1_000_000 / 1.025)
    assert c.implied_rate > RATE  # quoteloop sells BTC dearer than fair
    assert c.gross_edge_pct >= EDGE


def test_sell_btc_exact_out_asks_more_eure_for_the_btc_given() -> None:
    c = price(
        direction="SELL_BTC",
        fixed_side="exact_amount_out",
        fixed_amount=10**6,
        btc_decimals=8,
        eure_decimals=18,
        fair_rate=RATE,
        target_edge_pct=EDGE,
    )
    assert (c.amount_out, c.amount_in) == (10**6, 615 * 10**18)  # 600 EURe * 1.025, exact
    assert c.gross_edge_pct == EDGE


def test_buy_btc_exact_in_gives_less_eure_for_the_btc_received() -> None:
    c = price(
        direction="BUY_BTC",
        fixed_side="exact_amount_in",
        fixed_amount=10**6,
        btc_decimals=8,
        eure_decimals=18,
        fair_rate=RATE,
        target_edge_pct=EDGE,
    )
    assert c.amount_in == 10**6
    assert c.amount_out == 585365853658536585365  # floor(600e18 / 1.025)
    assert c.implied_rate < RATE  # quoteloop buys BTC cheaper than fair
    assert c.gross_edge_pct >= EDGE


def test_buy_btc_exact_out_asks_more_btc_for_the_eure_given() -> None:
    c = price(
        direction="BUY_BTC",
        fixed_side="exact_amount_out",
        fixed_amount=600 * 10**18,
        btc_decimals=8,
        eure_decimals=18,
        fair_rate=RATE,
        target_edge_pct=EDGE,
    )
    assert (c.amount_out, c.amount_in) == (600 * 10**18, 1025000)
    assert c.notional_eure == Decimal(600)


def test_edge_formula_values_both_sides_at_the_fair_rate() -> None:
    # giving 0.01 BTC (600 EURe at fair) for 612 EURe is a 2 % edge
    assert gross_edge_pct("SELL_BTC", 10**6, 612 * 10**18, RATE, 8, 18) == Decimal(2)
    # receiving 0.01 BTC (600 EURe) for 588 EURe given is 600/588 - 1
    assert gross_edge_pct("BUY_BTC", 10**6, 588 * 10**18, RATE, 8, 18).quantize(Decimal("0.0001")) == Decimal("2.0408")


@pytest.mark.parametrize("bad", [{"fair_rate": Decimal(0)}, {"fixed_amount": 0}, {"fixed_amount": 1}])
def test_unpriceable_requests_raise(bad: dict) -> None:
    args = dict(
        direction="SELL_BTC",
        fixed_side="exact_amount_in",
        fixed_amount=600 * 10**18,
        btc_decimals=8,
        eure_decimals=18,
        fair_rate=RATE,
        target_edge_pct=EDGE,
    )
    args.update(bad)
    with pytest.raises(PricingError):
        price(**args)  # 1 base unit of EURe buys no satoshi: the answer rounds to zero


rates = st.decimals(min_value=Decimal("1000"), max_value=Decimal("500000"), places=2)
edges = st.decimals(min_value=Decimal("0"), max_value=Decimal("20"), places=3)


@given(
    st.sampled_from(["SELL_BTC", "BUY_BTC"]),
    st.sampled_from(["exact_amount_in", "exact_amount_out"]),
    st.integers(min_value=10**4, max_value=10**12),
    rates,
    edges,
)
def test_edge_is_at_least_the_target_and_rounding_favours_quoteloop(
    direction: str, fixed_side: str, btc_like: int, rate: Decimal, edge: Decimal
) -> None:
    fixed_is_btc = (direction == "SELL_BTC") == (fixed_side == "exact_amount_out")
    fixed = btc_like if fixed_is_btc else btc_like * 10**14  # a comparable EURe amount
    c = price(
        direction=direction,
        fixed_side=fixed_side,
        fixed_amount=fixed,
        btc_decimals=8,  # type: ignore[arg-type]
        eure_decimals=18,
        fair_rate=rate,
        target_edge_pct=edge,
    )
    assert c.gross_edge_pct >= edge
    # one base unit more generosity to the counterparty would drop below the target
    if fixed_is_btc:
        worse = c.eure_amount + 1 if direction == "BUY_BTC" else c.eure_amount - 1
        assert gross_edge_pct(direction, c.btc_amount, worse, rate, 8, 18) < edge  # type: ignore[arg-type]
    else:
        worse = c.btc_amount + 1 if direction == "SELL_BTC" else c.btc_amount - 1
        if worse > 0:
            assert gross_edge_pct(direction, worse, c.eure_amount, rate, 8, 18) < edge  # type: ignore[arg-type]
