"""A decision that was never priced records no edge and no implied rate (null), never a figure
made of rounding: a request of 10^6 wei EURe rounds the BTC side up to 1 sat, which once stored
`gross_edge_pct` 60064450021.73. The gates (pure) and the decision the strategy builds from their
verdict, down to the JSON the history-writer stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from daemons.core.events import MarketPrice, decode, encode, new_event
from daemons.strategy_engine.gates import Reason, Verdict, decide
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from qlctl.tui.view import decision_rows
from tests.unit.test_strategy_gates import NOW, PRICE, ctx, demand

# quoteloop gives 10^6 wei EURe (exact out), the taker pays BTC: priced, the BTC side is 1 sat
DUST = dict(demand=demand("BUY_BTC", "exact_amount_out", 10**6))


def test_the_dust_request_is_refused_for_its_notional_without_a_candidate() -> None:
    v = decide(ctx(**DUST))
    assert v.reason is Reason.NOTIONAL_BELOW_MIN
    assert v.candidate is None
    assert v.notional_eure == Decimal("1E-12")
    assert v.detail == "0.000000000001 EURe < 1 EURe"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (DUST, Reason.NOTIONAL_BELOW_MIN),
        # quoteloop would give 0 sat for 1 wei: the answer rounds to zero
        (dict(demand=demand("SELL_BTC", "exact_amount_in", 1)), Reason.UNPRICEABLE),
        (dict(price=replace(PRICE, age_ms=60_000)), Reason.PRICE_STALE),
        (dict(price=None), Reason.NO_PRICE),
        (dict(now=NOW + timedelta(seconds=3)), Reason.REQUEST_TOO_OLD),
    ],
)
async def test_an_unpriced_decision_carries_null_edge_rate_and_amounts(
    change: dict[str, object], reason: Reason, engine: StrategyEngine
) -> None:
    c = ctx(**change)
    v = decide(c)
    assert v.reason is reason
    decision = engine.deciding.decision(c.demand, v, NOW)
    assert decision.decision == "reject" and decision.decision_reason == reason.value
    assert decision.gross_edge_pct is None and decision.implied_rate is None
    assert decision.reference_rate is None and decision.amount_in is None and decision.amount_out is None
    # what the history-writer stores: the same nulls, and it decodes back
    event = new_event(decision, producer=engine.producer_id, pair="BTC/EURe")
    payload = orjson.loads(encode(event))["payload"]
    assert payload["gross_edge_pct"] is None and payload["implied_rate"] is None
    assert decode("decision.trade_decision", encode(event)).payload == decision
    # shown as "-" by the TUI's latest requests
    [row] = decision_rows(
        [{"decision": "reject", "decision_reason": reason.value, "gross_edge_pct": payload["gross_edge_pct"]}]
    )
    assert row[4].plain == "-"


async def test_the_dust_decision_keeps_the_notional_that_refused_it(engine: StrategyEngine) -> None:
    c = ctx(**DUST)
    decision = engine.deciding.decision(c.demand, decide(c), NOW)
    assert decision.notional_eure == Decimal("1E-12")
    assert decision.decision_detail == "0.000000000001 EURe < 1 EURe"


@pytest.mark.parametrize("change", [dict(), dict(armed=False), dict(demand=demand(amount=50 * 10**18))])
async def test_a_priced_decision_still_records_its_edge_and_rate(
    change: dict[str, object], engine: StrategyEngine
) -> None:
    c = ctx(**change)
    v: Verdict = decide(c)
    assert v.candidate is not None
    decision = engine.deciding.decision(c.demand, v, NOW)
    assert decision.gross_edge_pct == v.candidate.gross_edge_pct and decision.gross_edge_pct is not None
    assert Decimal("2.0") <= decision.gross_edge_pct < Decimal("3")
    assert decision.implied_rate == v.candidate.implied_rate and decision.reference_rate == PRICE.fair_rate_sell_btc


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[StrategyEngine]:
    """A strategy-engine that is never started: only its decision building is used, with the
    price the gates were given as the one it holds."""
    service = StrategyEngine(StrategySettings(control_dir=tmp_path, kafka_bootstrap="127.0.0.1:1"))
    price = MarketPrice(
        source="kraken",
        fallback_used=False,
        fair_rate_buy_btc=PRICE.fair_rate_buy_btc,
        fair_rate_sell_btc=PRICE.fair_rate_sell_btc,
        source_time=NOW,
        freshness_ms=100,
        eure_eur_rate=Decimal(1),
        eure_basis="assumed_1_to_1",
        bid=None,
        ask=None,
        mid=None,
        decisionable=True,
    )
    service.price = new_event(price, producer=service.producer_id, pair="BTC/EURe", occurred_at=NOW)
    yield service
    await service.producer.stop()
    await service.consumer.stop()
    await service.results_consumer.stop()
