"""The candidate answer for a quote request, in integers and `Decimal` (docs/design.md §3).

quoteloop gives the request's `asset_out` and receives its `asset_in`. One side is fixed by the
request; the other is computed from the direction's fair rate so that quoteloop's gross edge is
`target_edge_pct`, rounding always in quoteloop's favour: an amount it gives is rounded down, an
amount it receives is rounded up.

Fair rates are EURe per BTC (docs/design.md §3): for `SELL_BTC` (quoteloop gives
BTC) the ask, what the BTC given would cost to buy back; for `BUY_BTC` (quoteloop gives EURe)
the bid, what the BTC received is worth if sold now. Both sides are valued in EURe at that rate:

    gross_edge_pct = (value received - value given) / value given * 100

before the protocol fee, which is recorded beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

from daemons.core.edge import DECIMAL_CTX as _CTX
from daemons.core.edge import HUNDRED, PricingError, gross_edge_pct, units
from daemons.core.events import Direction, FixedSide

__all__ = ["Candidate", "PricingError", "gross_edge_pct", "price", "units"]


@dataclass(frozen=True)
class Candidate:
    """The answer quoteloop would send, with the figures a decision records."""

    direction: Direction
    amount_in: int  # base units quoteloop receives (asset_in)
    amount_out: int  # base units quoteloop gives (asset_out)
    btc_amount: int
    eure_amount: int
    implied_rate: Decimal  # EURe per BTC of this answer
    reference_rate: Decimal  # the direction's fair rate
    gross_edge_pct: Decimal
    notional_eure: Decimal  # the EURe side of the answer, in EURe units


def _base(value: Decimal, decimals: int, rounding: str) -> int:
    return int(value.scaleb(decimals, _CTX).to_integral_value(rounding=rounding))


def price(
    *,
    direction: Direction,
    fixed_side: FixedSide,
    fixed_amount: int,
    btc_decimals: int,
    eure_decimals: int,
    fair_rate: Decimal,
    target_edge_pct: Decimal,
) -> Candidate:
    """Compute the non-fixed amount so the answer's edge is at least `target_edge_pct`."""
    if fair_rate <= 0:
        raise PricingError(f"fair rate must be positive, got {fair_rate}")
    if fixed_amount <= 0:
        raise PricingError("the request's fixed amount must be positive")
    with localcontext(_CTX):
        markup = 1 + target_edge_pct / HUNDRED
        fixed_is_btc = (direction == "SELL_BTC") == (fixed_side == "exact_amount_out")
        if fixed_is_btc:
            btc = fixed_amount
            fair_eure = units(btc, btc_decimals) * fair_rate
            if direction == "SELL_BTC":  # quoteloop receives EURe for the BTC it gives: ask more
                eure = _base(fair_eure * markup, eure_decimals, ROUND_CEILING)
            else:  # quoteloop gives EURe for the BTC it receives: give less
                eure = _base(fair_eure / markup, eure_decimals, ROUND_FLOOR)
        else:
            eure = fixed_amount
            fair_btc = units(eure, eure_decimals) / fair_rate
            if direction == "SELL_BTC":  # quoteloop gives BTC for the EURe it receives: give less
                btc = _base(fair_btc / markup, btc_decimals, ROUND_FLOOR)
            else:  # quoteloop receives BTC for the EURe it gives: ask more
                btc = _base(fair_btc * markup, btc_decimals, ROUND_CEILING)
        if btc <= 0 or eure <= 0:
            raise PricingError("the answer rounds to zero")
        amount_in, amount_out = (eure, btc) if direction == "SELL_BTC" else (btc, eure)
        implied = units(eure, eure_decimals) / units(btc, btc_decimals)
        edge = gross_edge_pct(direction, btc, eure, fair_rate, btc_decimals, eure_decimals)
        return Candidate(
            direction=direction,
            amount_in=amount_in,
            amount_out=amount_out,
            btc_amount=btc,
            eure_amount=eure,
            implied_rate=implied,
            reference_rate=fair_rate,
            gross_edge_pct=edge,
            notional_eure=units(eure, eure_decimals),
        )
