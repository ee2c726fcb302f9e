"""Fair-rate arithmetic of market-reference-ingest: side-specific rates, the EURe/EUR basis,
divergence and tick validity, exact in `Decimal` and rounded in quoteloop's favour."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.market_reference_ingest.fair import (
    divergence_pct,
    eure_basis,
    eure_per_btc,
    eure_state,
    fallback_fair,
    kraken_fair,
    kraken_mid,
    tick_rejection,
)

PLACES = 8
QUANTUM = Decimal(1).scaleb(-PLACES)

# BTC/EUR prices as Kraken quotes them (one decimal), over a wide range
kraken_prices = st.decimals(min_value=Decimal("1000.0"), max_value=Decimal("10000000.0"), places=1)
# CoinGecko answers with `precision=full`: many decimals
aggregate_prices = st.decimals(min_value=Decimal("1000"), max_value=Decimal("10000000"), places=9)
eure_rates = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("1.5"), places=6)
half_spreads = st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=3)


def exact(value: Decimal, rate: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return value / rate


def test_buy_btc_is_the_bid_and_sell_btc_the_ask_at_one_to_one() -> None:
    fair = kraken_fair(Decimal("60000.0"), Decimal("60000.1"), Decimal(1), PLACES)
    assert fair.buy_btc == Decimal("60000.0") and fair.sell_btc == Decimal("60000.1")
    assert fair.mid == Decimal("60000.05")
    assert all(isinstance(v, Decimal) for v in (fair.buy_btc, fair.sell_btc, fair.mid))


@given(kraken_prices, kraken_prices)
def test_at_one_to_one_the_fair_rates_are_the_quotes_exactly(a: Decimal, b: Decimal) -> None:
    bid, ask = min(a, b), max(a, b)
    fair = kraken_fair(bid, ask, Decimal(1), PLACES)
    assert fair.buy_btc == bid and fair.sell_btc == ask
    assert fair.buy_btc <= fair.mid <= fair.sell_btc


@given(kraken_prices, kraken_prices, eure_rates)
def test_rounding_favours_quoteloop_on_both_sides(a: Decimal, b: Decimal, rate: Decimal) -> None:
    bid, ask = min(a, b), max(a, b)
    fair = kraken_fair(bid, ask, rate, PLACES)
    # BUY_BTC values the BTC we receive: never above its true worth, by less than one quantum
    assert fair.buy_btc <= exact(bid, rate) < fair.buy_btc + QUANTUM
    # SELL_BTC values the BTC we give: never below its true cost, by less than one quantum
    assert fair.sell_btc - QUANTUM < exact(ask, rate) <= fair.sell_btc
    assert fair.buy_btc <= fair.mid <= fair.sell_btc
    assert fair.buy_btc.as_tuple().exponent == -PLACES


@given(aggregate_prices, eure_rates, half_spreads)
def test_fallback_brackets_the_aggregate_price(price: Decimal, rate: Decimal, half_spread: Decimal) -> None:
    fair = fallback_fair(price, rate, half_spread, PLACES)
    assert fair.buy_btc <= exact(price, rate) <= fair.sell_btc
    assert fair.buy_btc <= fair.mid <= fair.sell_btc
    # the widening is the configured half-spread each way (plus at most one rounding quantum)
    low = exact(price * (1 - half_spread / 100), rate)
    assert fair.buy_btc <= low < fair.buy_btc + QUANTUM


def test_fallback_half_spread_widens_each_way() -> None:
    fair = fallback_fair(Decimal("60000"), Decimal(1), Decimal("0.1"), PLACES)
    assert (fair.buy_btc, fair.mid, fair.sell_btc) == (Decimal("59940"), Decimal("60000"), Decimal("60060"))


@given(aggregate_prices, eure_rates)
def test_conversion_divides_by_the_eure_rate(eur: Decimal, rate: Decimal) -> None:
    down = eure_per_btc(eur, rate, PLACES, ROUND_FLOOR)
    up = eure_per_btc(eur, rate, PLACES, ROUND_CEILING)
    assert down <= exact(eur, rate) <= up and up - down <= QUANTUM
    # a EURe worth less than a euro means more EURe per BTC
    if rate < 1:
        assert down >= eure_per_btc(eur, Decimal(1), PLACES, ROUND_FLOOR)


@pytest.mark.parametrize("rate", [Decimal(0), Decimal("-1")])
def test_a_non_positive_eure_rate_is_refused(rate: Decimal) -> None:
    with pytest.raises(ValueError):
        eure_per_btc(Decimal("60000"), rate, PLACES, ROUND_FLOOR)


def test_kraken_mid_is_exact() -> None:
    assert kraken_mid(Decimal("60000.1"), Decimal("60000.2")) == Decimal("60000.15")


@given(aggregate_prices, aggregate_prices)
def test_divergence_never_understates(reference: Decimal, other: Decimal) -> None:
    d = divergence_pct(reference, other)
    true = exact(abs(reference - other) * 100, other)
    assert true <= d < true + Decimal("0.000001")
    assert d >= 0


def test_divergence_examples() -> None:
    assert divergence_pct(Decimal("60600"), Decimal("60000")) == Decimal("1")
    assert divergence_pct(Decimal("60000"), Decimal("60000")) == 0
    with pytest.raises(ValueError):
        divergence_pct(Decimal("1"), Decimal("0"))


@pytest.mark.parametrize(
    ("bid", "ask", "why"),
    [
        ("60000.0", "60000.1", None),
        ("60000.1", "60000.0", "crossed"),
        ("60000.0", "60000.0", "locked"),
        ("0", "60000.0", "non_positive"),
        ("60000.0", "-1", "non_positive"),
    ],
)
def test_tick_rejection(bid: str, ask: str, why: str | None) -> None:
    assert tick_rejection(Decimal(bid), Decimal(ask)) == why


@given(kraken_prices, kraken_prices)
def test_a_tick_is_kept_exactly_when_ask_is_above_bid(bid: Decimal, ask: Decimal) -> None:
    assert (tick_rejection(bid, ask) is None) == (ask > bid)


@pytest.mark.parametrize(
    ("observed", "age_s", "state"),
    [
        (None, None, "no_data"),
        ("0.998912", 10.0, "ok"),
        ("1.01", 10.0, "ok"),  # exactly at the 1 % tolerance
        ("0.99", 10.0, "ok"),
        ("1.0101", 10.0, "out_of_tolerance"),
        ("0.95", 10.0, "out_of_tolerance"),
        ("0.95", 3600.0, "out_of_tolerance"),  # exactly at the age bound: still fresh
        ("0.95", 3600.001, "stale"),  # an old quote checks nothing, either way
        ("1", 7200.0, "stale"),
    ],
)
def test_eure_state(observed: str | None, age_s: float | None, state: str) -> None:
    value = Decimal(observed) if observed is not None else None
    assert eure_state(value, age_s, 3600.0, Decimal("1.0")) == state


def test_eure_basis() -> None:
    checked = Decimal("0.998912")
    assert eure_basis("ok", checked, True) == (checked, "sanity_checked")
    assert eure_basis("ok", checked, False) == (Decimal(1), "sanity_checked")
    for state in ("no_data", "stale", "out_of_tolerance"):
        rate, basis = eure_basis(state, Decimal("0.95"), True)  # type: ignore[arg-type]
        assert rate == 1 and basis == "assumed_1_to_1"
