"""quoteloop's gross edge on an answer, in `Decimal` (one home: strategy-engine prices with it,
trade-executor checks every command against it).

Fair rates are EURe per BTC: for `SELL_BTC` (quoteloop gives BTC) the ask, for `BUY_BTC`
(quoteloop gives EURe) the bid. Both sides of an answer are valued in EURe at that rate:

    gross_edge_pct = (value received - value given) / value given * 100

before the protocol fee.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from daemons.core.events import Direction

# u128 amounts with 18 decimals times rates need ~60 significant digits to stay exact
DECIMAL_CTX = Context(prec=80)
HUNDRED = Decimal(100)


class PricingError(ValueError):
    """The request cannot be priced (non-positive rate or amount, or an answer of zero)."""


def units(base: int, decimals: int) -> Decimal:
    return Decimal(base).scaleb(-decimals, DECIMAL_CTX)


def fair_rate_for(direction: Direction, fair_rate_buy_btc: Decimal, fair_rate_sell_btc: Decimal) -> Decimal:
    """The fair rate an answer in `direction` is valued at."""
    return fair_rate_sell_btc if direction == "SELL_BTC" else fair_rate_buy_btc


def gross_edge_pct(
    direction: Direction, btc_amount: int, eure_amount: int, fair_rate: Decimal, btc_decimals: int, eure_decimals: int
) -> Decimal:
    """quoteloop's edge of an answer at the direction's fair rate, in percent."""
    with localcontext(DECIMAL_CTX):
        btc_value = units(btc_amount, btc_decimals) * fair_rate
        eure_value = units(eure_amount, eure_decimals)
        if direction == "SELL_BTC":  # receives EURe, gives BTC
            received, given = eure_value, btc_value
        else:  # receives BTC, gives EURe
            received, given = btc_value, eure_value
        if given <= 0:
            raise PricingError("nothing given: the edge is undefined")
        return (received - given) / given * HUNDRED
