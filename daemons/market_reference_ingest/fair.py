"""Fair-rate arithmetic, all in `Decimal`: side-specific fair rates, the EURe/EUR basis, the
cross-check divergence and the validity of a Kraken tick. Pure functions, no I/O.

Direction semantics (docs/design.md §3): for `BUY_BTC` quoteloop receives BTC, so
the reference is what that BTC fetches if sold now, the best bid; for `SELL_BTC` quoteloop gives
BTC, so the reference is what it costs to buy back, the best ask. EURe per BTC is EUR per BTC
divided by the EURe/EUR rate. Rounding always favours quoteloop: the BUY_BTC rate (the value of
what we receive) is rounded down, the SELL_BTC rate (the value of what we give) up, so a rounded
rate never makes a trade look better than it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Literal

ONE = Decimal(1)
HUNDRED = Decimal(100)
# Enough digits that a quotient is exact to far below the published places before rounding.
_PRECISION = 50

TickRejection = Literal["non_positive", "crossed", "locked"]
EureState = Literal["ok", "no_data", "stale", "out_of_tolerance"]
EureBasis = Literal["assumed_1_to_1", "sanity_checked"]


@dataclass(frozen=True)
class FairRates:
    """EURe per BTC for each direction, and the mid between them."""

    buy_btc: Decimal
    sell_btc: Decimal
    mid: Decimal


def _quantum(places: int) -> Decimal:
    return ONE.scaleb(-places)


def eure_per_btc(eur_per_btc: Decimal, eure_eur_rate: Decimal, places: int, rounding: str) -> Decimal:
    """EUR per BTC converted to EURe per BTC (÷ EURe/EUR), rounded to `places` as told."""
    if eure_eur_rate <= 0:
        raise ValueError(f"EURe/EUR rate must be positive, got {eure_eur_rate}")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (eur_per_btc / eure_eur_rate).quantize(_quantum(places), rounding=rounding)


def kraken_fair(bid: Decimal, ask: Decimal, eure_eur_rate: Decimal, places: int) -> FairRates:
    """BUY_BTC from the best bid (rounded down), SELL_BTC from the best ask (rounded up)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        mid = (bid + ask) / 2
    return FairRates(
        buy_btc=eure_per_btc(bid, eure_eur_rate, places, ROUND_FLOOR),
        sell_btc=eure_per_btc(ask, eure_eur_rate, places, ROUND_CEILING),
        mid=eure_per_btc(mid, eure_eur_rate, places, ROUND_HALF_EVEN),
    )


def fallback_fair(price: Decimal, eure_eur_rate: Decimal, half_spread_pct: Decimal, places: int) -> FairRates:
    """CoinGecko has one aggregate price and no book: the two directions are that price widened
    by `half_spread_pct` each way, so the fallback never quotes tighter than its uncertainty."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        spread = half_spread_pct / HUNDRED
        low = price * (ONE - spread)
        high = price * (ONE + spread)
    return FairRates(
        buy_btc=eure_per_btc(low, eure_eur_rate, places, ROUND_FLOOR),
        sell_btc=eure_per_btc(high, eure_eur_rate, places, ROUND_CEILING),
        mid=eure_per_btc(price, eure_eur_rate, places, ROUND_HALF_EVEN),
    )


def kraken_mid(bid: Decimal, ask: Decimal) -> Decimal:
    """The EUR mid of a Kraken top of book (exact: half of a sum of two decimals)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (bid + ask) / 2


def divergence_pct(reference: Decimal, other: Decimal, places: int = 6) -> Decimal:
    """|reference - other| / other, in percent, rounded up (a conflict is never understated)."""
    if other <= 0:
        raise ValueError(f"cross-check price must be positive, got {other}")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (abs(reference - other) / other * HUNDRED).quantize(_quantum(places), rounding=ROUND_CEILING)


def tick_rejection(bid: Decimal, ask: Decimal) -> TickRejection | None:
    """Why a Kraken top of book cannot be a price, or None when it can."""
    if bid <= 0 or ask <= 0:
        return "non_positive"
    if ask < bid:
        return "crossed"
    if ask == bid:
        return "locked"
    return None


def eure_state(
    observed: Decimal | None, age_s: float | None, stale_after_s: float, tolerance_pct: Decimal
) -> EureState:
    """How CoinGecko's EURe/EUR quote stands: absent, too old to check anything, or fresh and
    either within `tolerance_pct` of 1 or not. An old quote says nothing either way."""
    if observed is None or age_s is None:
        return "no_data"
    if age_s > stale_after_s:
        return "stale"
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        off_by_pct = abs(observed - ONE) * HUNDRED
    return "ok" if off_by_pct <= tolerance_pct else "out_of_tolerance"


def eure_basis(state: EureState, observed: Decimal | None, apply_checked_rate: bool) -> tuple[Decimal, EureBasis]:
    """The EURe/EUR rate to divide by and its basis. 1:1 unless a fresh quote within tolerance
    confirms the peg; then the quote itself is applied if the operator chose so, else 1 stays
    (confirmed). An out-of-tolerance quote never moves the price: that needs a human."""
    if state == "ok" and observed is not None:
        return (observed if apply_checked_rate else ONE), "sanity_checked"
    return ONE, "assumed_1_to_1"
