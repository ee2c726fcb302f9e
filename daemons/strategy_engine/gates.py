"""The decision pipeline: a fixed sequence of pure gates, each returning a typed reason.

The order is fixed: paused · pair not active · repeated quote id ·
request older than the answer window · `min_deadline_ms` beyond the longest exposure · no price ·
price stale · price not decisionable · edge below threshold · notional below minimum or above
cap · no inventory · inventory stale · insufficient spendable inventory of the asset given
(spendable = credited − reserved for live answers − buffer), or its own reason when a pending
deposit would cover it · audit history impaired (strict mode) · disarmed. The first gate that
fails names the decision's reason; a request that passes them all is `EXECUTE`. Nothing here
does I/O: the service hands in views of its latest inputs (`price_view`, `inventory_view`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypedDict

from daemons.core.assets import ActivePair
from daemons.core.ceilings import Ceilings
from daemons.core.edge import fair_rate_for
from daemons.core.events import Direction, Envelope, IntentInventory, MarketPrice, SwapDemand, input_age_ms
from daemons.core.inventory import InventoryView, view_of
from daemons.strategy_engine.pricing import Candidate, PricingError, price


class Reason(StrEnum):
    EXECUTE = "EXECUTE"
    PAUSED = "PAUSED"
    PAIR_NOT_ACTIVE = "PAIR_NOT_ACTIVE"
    REPEATED_QUOTE_ID = "REPEATED_QUOTE_ID"
    REQUEST_TOO_OLD = "REQUEST_TOO_OLD"
    DEADLINE_TOO_LONG = "DEADLINE_TOO_LONG"
    NO_PRICE = "NO_PRICE"
    PRICE_STALE = "PRICE_STALE"
    PRICE_NOT_DECISIONABLE = "PRICE_NOT_DECISIONABLE"
    UNPRICEABLE = "UNPRICEABLE"
    EDGE_BELOW_THRESHOLD = "EDGE_BELOW_THRESHOLD"
    NOTIONAL_BELOW_MIN = "NOTIONAL_BELOW_MIN"
    NOTIONAL_ABOVE_CAP = "NOTIONAL_ABOVE_CAP"
    NO_INVENTORY = "NO_INVENTORY"
    INVENTORY_STALE = "INVENTORY_STALE"
    INSUFFICIENT_INVENTORY = "INSUFFICIENT_INVENTORY"
    PENDING_DEPOSIT_NOT_CREDITED = "PENDING_DEPOSIT_NOT_CREDITED"
    AUDIT_IMPAIRED = "AUDIT_IMPAIRED"
    DISARMED = "DISARMED"


@dataclass(frozen=True)
class PriceView:
    """The latest reference price as the strategy uses it."""

    event_id: str
    fair_rate_buy_btc: Decimal
    fair_rate_sell_btc: Decimal
    age_ms: int  # at decision time
    decisionable: bool
    not_decisionable_reason: str | None = None
    source: str | None = None
    fallback_used: bool = False
    eure_eur_rate: Decimal = Decimal(1)
    eure_basis: str = "assumed_1_to_1"

    def fair_rate(self, direction: Direction) -> Decimal:
        return fair_rate_for(direction, self.fair_rate_buy_btc, self.fair_rate_sell_btc)


def price_view(event: Envelope[MarketPrice], now: datetime) -> PriceView:
    p = event.payload
    if p.fair_rate_buy_btc is None or p.fair_rate_sell_btc is None or p.freshness_ms is None:
        return PriceView(
            event_id=str(event.event_id),
            fair_rate_buy_btc=Decimal(0),
            fair_rate_sell_btc=Decimal(0),
            age_ms=0,
            decisionable=False,
            not_decisionable_reason=p.status_reason or "NO_FAIR_RATE",
        )
    # the freshness it was published with (from our receive time for Kraken, so the exchange's
    # clock never ages it; CoinGecko's own time) plus the time since its envelope
    age = input_age_ms(None, p.freshness_ms, event.observed_at, now)
    assert age is not None
    return PriceView(
        event_id=str(event.event_id),
        fair_rate_buy_btc=p.fair_rate_buy_btc,
        fair_rate_sell_btc=p.fair_rate_sell_btc,
        age_ms=age,
        decisionable=p.decisionable,
        not_decisionable_reason=p.status_reason,
        source=p.source,
        fallback_used=p.fallback_used,
        eure_eur_rate=p.eure_eur_rate,
        eure_basis=p.eure_basis,
    )


def inventory_view(event: Envelope[IntentInventory]) -> InventoryView:
    return view_of(event.payload, event.observed_at)


@dataclass(frozen=True)
class Limits:
    threshold_pct: Decimal = Decimal("2.0")
    target_edge_pct: Decimal = Decimal("2.5")
    answer_window_ms: int = 2000
    max_deadline_ms: int = 120_000
    min_notional_eure: Decimal = Decimal("1")
    max_notional_eure: Decimal = Decimal("5")
    price_max_age_ms: int = 5_000
    inventory_max_age_ms: int = 30_000
    buffer: dict[str, int] = field(default_factory=dict)  # base units kept back per asset


def ceiling_breach(limits: Limits, ceilings: Ceilings) -> str | None:
    """Which limit is looser than the root-owned ceilings (daemons/core/ceilings.py), naming
    both; None when every one is within them."""
    for name, value, ceiling, ceiling_name, looser in (
        (
            "threshold_pct",
            limits.threshold_pct,
            ceilings.min_edge_pct,
            "min_edge_pct",
            limits.threshold_pct < ceilings.min_edge_pct,
        ),
        (
            "max_notional_eure",
            limits.max_notional_eure,
            ceilings.max_notional_eure_per_answer,
            "max_notional_eure_per_answer",
            limits.max_notional_eure > ceilings.max_notional_eure_per_answer,
        ),
        (
            "price_max_age_ms",
            limits.price_max_age_ms,
            ceilings.max_price_age_ms,
            "max_price_age_ms",
            limits.price_max_age_ms > ceilings.max_price_age_ms,
        ),
        (
            "inventory_max_age_ms",
            limits.inventory_max_age_ms,
            ceilings.max_inventory_age_ms,
            "max_inventory_age_ms",
            limits.inventory_max_age_ms > ceilings.max_inventory_age_ms,
        ),
    ):
        if looser:
            side = "below" if name == "threshold_pct" else "over"
            return f"{name} {value} is {side} the ceiling {ceiling_name} {ceiling}"
    return None


@dataclass(frozen=True)
class Context:
    demand: SwapDemand
    now: datetime
    pair: ActivePair
    limits: Limits
    paused: bool
    armed: bool
    repeat: bool
    price: PriceView | None
    inventory: InventoryView | None
    reserved: dict[str, int]
    audit_impaired: bool = False


class _Figures(TypedDict):
    """The inventory figures of a `Verdict`, for the asset quoteloop would give."""

    give_asset: str
    credited: int
    reserved: int
    buffer: int
    pending_in: int


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    candidate: Candidate | None = None
    # the inventory figures behind the verdict for the asset quoteloop would give
    give_asset: str | None = None
    credited: int | None = None
    reserved: int | None = None
    buffer: int | None = None
    pending_in: int | None = None
    detail: str | None = None
    # the request's notional when it was refused for it without a candidate (NOTIONAL_BELOW_MIN)
    notional_eure: Decimal | None = None

    @property
    def execute(self) -> bool:
        return self.reason is Reason.EXECUTE

    @property
    def spendable(self) -> int | None:
        if self.credited is None:
            return None
        return self.credited - (self.reserved or 0) - (self.buffer or 0)


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def decide(ctx: Context) -> Verdict:
    d, lim = ctx.demand, ctx.limits
    if ctx.paused:
        return Verdict(Reason.PAUSED)
    if ctx.pair.direction_of(d.asset_in, d.asset_out) != d.direction:
        return Verdict(Reason.PAIR_NOT_ACTIVE)
    if ctx.repeat:
        return Verdict(Reason.REPEATED_QUOTE_ID)
    age_ms = (ctx.now - d.received_at).total_seconds() * 1000
    if age_ms > lim.answer_window_ms:
        return Verdict(Reason.REQUEST_TOO_OLD, detail=f"{age_ms:.0f} ms > {lim.answer_window_ms} ms")
    if d.min_deadline_ms > lim.max_deadline_ms:
        return Verdict(Reason.DEADLINE_TOO_LONG, detail=f"{d.min_deadline_ms} ms > {lim.max_deadline_ms} ms")
    p = ctx.price
    if p is None:
        return Verdict(Reason.NO_PRICE)
    if p.age_ms > lim.price_max_age_ms:
        return Verdict(Reason.PRICE_STALE, detail=f"{p.age_ms} ms > {lim.price_max_age_ms} ms")
    if not p.decisionable:
        return Verdict(Reason.PRICE_NOT_DECISIONABLE, detail=p.not_decisionable_reason)
    btc_id, eure_id = ctx.pair.btc.asset_id, ctx.pair.eure.asset_id
    try:
        cand = price(
            direction=d.direction,
            fixed_side=d.fixed_side,
            fixed_amount=d.fixed_amount,
            btc_decimals=ctx.pair.decimals(btc_id),
            eure_decimals=ctx.pair.decimals(eure_id),
            fair_rate=p.fair_rate(d.direction),
            target_edge_pct=lim.target_edge_pct,
        )
    except PricingError as exc:
        return Verdict(Reason.UNPRICEABLE, detail=str(exc))
    if cand.gross_edge_pct < lim.threshold_pct:
        return Verdict(Reason.EDGE_BELOW_THRESHOLD, cand)
    if cand.notional_eure < lim.min_notional_eure:
        # not priced: below the minimum the answer's amounts are dominated by rounding (a
        # 10^6-wei request rounds up to 1 sat, an "edge" of 6 * 10^10 %), so the decision
        # records no candidate, no edge and no implied rate; only the notional that refused it
        return Verdict(
            Reason.NOTIONAL_BELOW_MIN,
            notional_eure=cand.notional_eure,
            detail=f"{_plain(cand.notional_eure)} EURe < {lim.min_notional_eure} EURe",
        )
    if cand.notional_eure > lim.max_notional_eure:
        return Verdict(Reason.NOTIONAL_ABOVE_CAP, cand)
    inv = ctx.inventory
    if inv is None:
        return Verdict(Reason.NO_INVENTORY, cand)
    give = d.asset_out
    figures = _Figures(
        give_asset=give,
        credited=inv.spendable.get(give, 0),
        reserved=ctx.reserved.get(give, 0),
        buffer=lim.buffer.get(give, 0),
        pending_in=inv.pending_in.get(give, 0),
    )
    if inv.stale or inv.age_ms_at(ctx.now) > lim.inventory_max_age_ms:
        return Verdict(Reason.INVENTORY_STALE, cand, **figures)
    verdict = Verdict(Reason.EXECUTE, cand, **figures)
    spendable = verdict.spendable or 0
    if spendable < cand.amount_out:
        if spendable + figures["pending_in"] >= cand.amount_out:
            return Verdict(Reason.PENDING_DEPOSIT_NOT_CREDITED, cand, **figures)
        return Verdict(Reason.INSUFFICIENT_INVENTORY, cand, **figures)
    if ctx.audit_impaired:
        return Verdict(Reason.AUDIT_IMPAIRED, cand, **figures)
    if not ctx.armed:
        return Verdict(Reason.DISARMED, cand, **figures)
    return verdict
