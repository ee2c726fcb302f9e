"""Pure logic of near-intents-ingest: which pair a quote request is, whether its id was seen
before, and the normalised demand event for the active pair (docs/design.md §1).

Directions are named from quoteloop's side (docs/design.md §2): the request's
`asset_out` is what quoteloop would give. `SELL_BTC` gives BTC for EURe, `BUY_BTC` gives EURe
for BTC.
"""

from __future__ import annotations

from typing import Literal

from daemons.core.assets import ActivePair
from daemons.core.events import FixedSide, SwapDemand
from daemons.venues.near_intents.relay_ws import QuoteRequest

Classification = Literal["active_pair", "other_pair"]


def classify(pair: ActivePair, quote: QuoteRequest) -> Classification:
    return "active_pair" if pair.direction_of(quote.asset_in, quote.asset_out) is not None else "other_pair"


def swap_demand(pair: ActivePair, quote: QuoteRequest, *, repeat: bool) -> SwapDemand:
    """The normalised request; only for an active-pair quote."""
    direction = pair.direction_of(quote.asset_in, quote.asset_out)
    if direction is None:
        raise ValueError(f"quote {quote.quote_id} is not on the active pair")
    # exactly one of the two amounts is present: the relay client guarantees it (docs/near-intents-relay.md §3)
    fixed_side: FixedSide
    if quote.exact_amount_in is not None:
        fixed_side, fixed_amount = "exact_amount_in", quote.exact_amount_in
    else:
        assert quote.exact_amount_out is not None
        fixed_side, fixed_amount = "exact_amount_out", quote.exact_amount_out
    return SwapDemand(
        quote_id=quote.quote_id,
        direction=direction,
        asset_in=quote.asset_in,
        asset_out=quote.asset_out,
        asset_in_decimals=pair.decimals(quote.asset_in),
        asset_out_decimals=pair.decimals(quote.asset_out),
        fixed_side=fixed_side,
        fixed_amount=fixed_amount,
        min_deadline_ms=quote.min_deadline_ms,
        partner=dict(quote.metadata),
        received_at=quote.received_at,
        repeat=repeat,
    )
