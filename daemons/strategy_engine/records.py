"""What a verdict becomes on the bus: the `decision.trade_decision` every request gets, the
`cmd.execute_trade` a request that passes every gate gets, and the summary `/state` shows of the
latest decision. Nothing here does I/O or reads the service: the deciding shell
(`deciding.py`) hands in the request, the verdict and the inputs the gates saw; ids are fresh.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from daemons.core.events import Envelope, ExecuteTrade, IntentInventory, MarketPrice, SwapDemand, TradeDecision
from daemons.strategy_engine.gates import Limits, Verdict, price_view
from daemons.strategy_engine.pricing import Candidate


def trade_decision(
    demand: SwapDemand,
    v: Verdict,
    now: datetime,
    *,
    price: Envelope[MarketPrice] | None,
    inventory: Envelope[IntentInventory] | None,
    limits: Limits,
    armed: bool,
    pair: str,
) -> TradeDecision:
    """The decision record: the verdict with the figures it was made on (the price and the
    inventory snapshot held, the edge and amounts when the request was priced, null otherwise)."""
    c = v.candidate
    pv = price_view(price, now) if price is not None else None
    inv = inventory.payload if inventory is not None else None
    figures = None
    if v.give_asset is not None:
        figures = {
            "asset_id": v.give_asset,
            "credited": str(v.credited),
            "reserved": str(v.reserved),
            "buffer": str(v.buffer),
            "pending_in": str(v.pending_in),
            "spendable": str(v.spendable),
        }
    return TradeDecision(
        decision_id=str(uuid.uuid4()),
        quote_id=demand.quote_id,
        pair=pair,
        direction=demand.direction,
        decision="execute" if v.execute else "reject",
        decision_reason=v.reason.value,
        decision_detail=v.detail,
        implied_rate=c.implied_rate if c else None,
        reference_rate=c.reference_rate if c else None,
        gross_edge_pct=c.gross_edge_pct if c else None,
        threshold_pct=limits.threshold_pct,
        target_edge_pct=limits.target_edge_pct,
        price_freshness_ms=pv.age_ms if pv else None,
        price_event_id=price.event_id if price is not None else None,
        price_source=pv.source if pv else None,
        fallback_used=pv.fallback_used if pv else None,
        eure_eur_rate=pv.eure_eur_rate if pv else None,
        eure_basis=pv.eure_basis if pv else None,
        inventory_snapshot_id=inv.inventory_id if inv else None,
        inventory_snapshot=figures,
        fixed_side=demand.fixed_side,
        amount_in=c.amount_in if c else None,
        amount_out=c.amount_out if c else None,
        notional_eure=c.notional_eure if c else v.notional_eure,
        protocol_fee_pips=inv.fee_pips if inv else None,
        armed=armed,
        request_received_at=demand.received_at,
        decided_at=now,
    )


def execute_command(demand: SwapDemand, decision_id: str, candidate: Candidate, answer_window_ms: int) -> ExecuteTrade:
    """The command for the executor: the candidate answer, to be sent by `received_at` plus the
    answer window."""
    return ExecuteTrade(
        command_id=str(uuid.uuid4()),
        decision_id=decision_id,
        quote_id=demand.quote_id,
        direction=demand.direction,
        asset_in=demand.asset_in,
        asset_out=demand.asset_out,
        amount_in=candidate.amount_in,
        amount_out=candidate.amount_out,
        fixed_side=demand.fixed_side,
        min_deadline_ms=demand.min_deadline_ms,
        request_received_at=demand.received_at,
        answer_by=demand.received_at + timedelta(milliseconds=answer_window_ms),
    )


def decision_summary(v: Verdict, decision: TradeDecision) -> dict[str, Any]:
    """`/state`'s `latest_decision` (and `latest_rejection`)."""
    return {
        "quote_id": decision.quote_id,
        "decision_id": decision.decision_id,
        "reason": v.reason.value,
        "detail": v.detail,
        "direction": decision.direction,
        "gross_edge_pct": decision.gross_edge_pct,
        "at": decision.decided_at,
    }
