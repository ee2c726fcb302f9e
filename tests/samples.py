"""One valid payload per topic, for tests and benchmarks (fresh ids on every call)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from daemons.core.events import (
    AssetInventory,
    ExecuteTrade,
    IntentInventory,
    LiquidityAction,
    MarketPrice,
    RawQuote,
    SwapDemand,
    TradeDecision,
    TradeResult,
)

EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
NBTC = "nep141:nbtc.bridge.near"


def sample_payloads() -> dict[str, object]:
    now = datetime.now(UTC)
    quote_id = str(uuid.uuid4())
    return {
        "raw.near_intents.quote": RawQuote(
            raw_frame='{"jsonrpc":"2.0","method":"event","params":{}}',
            subscription="sub-1",
            received_at=now,
            classification="active_pair",
            quote_id=quote_id,
        ),
        "norm.swap_demand": SwapDemand(
            quote_id=quote_id,
            direction="SELL_BTC",
            asset_in=EURE,
            asset_out=NBTC,
            asset_in_decimals=18,
            asset_out_decimals=8,
            fixed_side="exact_amount_in",
            fixed_amount=100000,
            min_deadline_ms=60000,
            partner={"partner_id": "1click"},
            received_at=now,
        ),
        "ref.market_price": MarketPrice(
            source="kraken",
            fallback_used=False,
            fair_rate_buy_btc=Decimal("91234.5"),
            fair_rate_sell_btc=Decimal("91240.1"),
            fair_rate_mid=Decimal("91237.3"),
            source_time=now,
            freshness_ms=120,
            eure_eur_rate=Decimal("1"),
            eure_basis="assumed_1_to_1",
            eure_state="stale",
            eure_eur_observed=Decimal("0.9989"),
            eure_eur_observed_age_ms=4_000_000,
            bid=Decimal("91234.5"),
            ask=Decimal("91240.1"),
            mid=Decimal("91237.3"),
            kraken_source_time=now,
            kraken_age_ms=120,
            kraken_fresh=True,
            kraken_state="ok",
            coingecko_price=Decimal("91250.123456789"),
            coingecko_last_updated_at=now - timedelta(seconds=30),
            coingecko_age_ms=30_000,
            coingecko_fresh=True,
            coingecko_state="ok",
            cross_check_divergence_pct=Decimal("0.0141"),
            decisionable=True,
        ),
        "state.intent_inventory": IntentInventory(
            inventory_id=str(uuid.uuid4()),
            account_id="solver.near",
            assets=[
                AssetInventory(asset_id=NBTC, decimals=8, spendable=5_000_000, credited=5_000_000),
                AssetInventory(asset_id=EURE, decimals=18, spendable=10**21, credited=10**21, pending_in=5 * 10**20),
            ],
            synced_at=now,
            block_height=150_000_123,
            age_ms=50,
            stale=False,
            freshness_bound_ms=15_000,
            sync_id=str(uuid.uuid4()),
            trigger="interval",
            pending=[
                {
                    "direction": "in",
                    "asset_id": EURE,
                    "amount": str(5 * 10**20),
                    "source": "liquidity_action",
                    "status": "notified",
                    "liquidity_action_id": str(uuid.uuid4()),
                    "chain": "eth:100",
                    "tx_hash": "0xabc",
                }
            ],
            reconciliation_status="awaiting_credit",
            reconciliation=[
                {"asset_id": EURE, "status": "awaiting_credit", "amount": str(5 * 10**20), "tx_hash": "0xabc"}
            ],
        ),
        "ops.liquidity_action": LiquidityAction(
            liquidity_action_id=str(uuid.uuid4()),
            kind="funding",
            status="notified",
            asset_id=EURE,
            chain="eth:100",
            amount=10**20,
            tx_hash="0xabc",
        ),
        "decision.trade_decision": TradeDecision(
            decision_id=str(uuid.uuid4()),
            quote_id=quote_id,
            pair="BTC/EURe",
            direction="SELL_BTC",
            decision="reject",
            decision_reason="edge_below_threshold",
            implied_rate=Decimal("92000"),
            reference_rate=Decimal("91240.1"),
            gross_edge_pct=Decimal("0.83"),
            threshold_pct=Decimal("2.0"),
            price_freshness_ms=120,
            price_event_id=uuid.uuid4(),
            inventory_snapshot_id=str(uuid.uuid4()),
            armed=False,
        ),
        "cmd.execute_trade": ExecuteTrade(
            command_id=str(uuid.uuid4()),
            decision_id=str(uuid.uuid4()),
            quote_id=quote_id,
            direction="BUY_BTC",
            asset_in=NBTC,
            asset_out=EURE,
            amount_in=100000,
            amount_out=89_000 * 10**15,
            fixed_side="exact_amount_in",
            min_deadline_ms=60000,
            answer_by=now + timedelta(seconds=2),
        ),
        "exec.trade_result": TradeResult(
            execution_id=str(uuid.uuid4()),
            command_id=str(uuid.uuid4()),
            quote_id=quote_id,
            status="rejected",
            reason="invalid signature",
            venue_response={"error": {"code": -32000, "message": "invalid signature"}},
        ),
    }
