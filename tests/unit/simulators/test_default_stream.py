"""The relay simulator's default stream for `make run` (simulators/__main__.py): sizes the
strategy answers, drawn per fixed-side asset, both directions and both fixed sides; and
`start_scenario` without `sizes_by_asset` streams what it always did."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID, ActivePair
from daemons.core.events import SwapDemand
from daemons.core.inventory import InventoryView
from daemons.strategy_engine.gates import Context, Limits, PriceView, Reason, decide
from daemons.strategy_engine.service import StrategySettings
from simulators.__main__ import STREAM_SIZES_BTC, STREAM_SIZES_EURE, stream_scenario
from simulators.kraken import KrakenSimulator
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.unit.test_strategy_gates import NOW


def _default(name: str) -> Any:
    return StrategySettings.model_fields[name].default


# the strategy's defaults, as an operator who arms the local stack has them
LIMITS = Limits(
    threshold_pct=_default("strategy_threshold_pct"),
    target_edge_pct=_default("strategy_target_edge_pct"),
    min_notional_eure=_default("strategy_min_notional_eure"),
    max_notional_eure=_default("strategy_max_notional_eure"),
)


def _kraken_start() -> tuple[Decimal, Decimal]:
    market = KrakenSimulator("127.0.0.1", 0).markets["BTC/EUR"]
    return market.bid, market.ask


def _decide(pair: ActivePair, direction: str, fixed_side: str, amount: int, bid: Decimal, ask: Decimal) -> Reason:
    btc, eure = pair.btc.asset_id, EURE_ID
    asset_in, asset_out = (eure, btc) if direction == "SELL_BTC" else (btc, eure)
    demand = SwapDemand(
        quote_id="q",
        direction=direction,
        asset_in=asset_in,
        asset_out=asset_out,  # type: ignore[arg-type]
        asset_in_decimals=pair.decimals(asset_in),
        asset_out_decimals=pair.decimals(asset_out),
        fixed_side=fixed_side,
        fixed_amount=amount,
        min_deadline_ms=60_000,  # type: ignore[arg-type]
        received_at=NOW - timedelta(milliseconds=50),
    )
    price = PriceView(event_id="p", fair_rate_buy_btc=bid, fair_rate_sell_btc=ask, age_ms=100, decisionable=True)
    plenty = InventoryView(
        inventory_id="i", spendable={btc: 10**8, eure: 10**22}, age_ms=100, observed_at=NOW, stale=False
    )
    verdict = decide(
        Context(
            demand=demand,
            now=NOW,
            pair=pair,
            limits=LIMITS,
            paused=False,
            armed=True,
            repeat=False,
            price=price,
            inventory=plenty,
            reserved={},
        )
    )
    return verdict.reason


@pytest.mark.parametrize("btc_asset_id", [NBTC_ID, POA_BTC_ID])
@pytest.mark.parametrize("walk", [Decimal("0.9"), Decimal(1), Decimal("1.1")])
def test_every_size_of_the_default_stream_is_answered_by_the_default_strategy(btc_asset_id: str, walk: Decimal) -> None:
    """At the Kraken simulator's starting price and 10 % either way of it: each size, in each
    direction and from each fixed side, passes every gate (no NOTIONAL_* or UNPRICEABLE)."""
    pair = ActivePair(btc_asset_id)
    scenario = stream_scenario(btc_asset_id, 1.0)
    assert scenario["pairs"] == [[btc_asset_id, EURE_ID]]
    bid, ask = (p * walk for p in _kraken_start())
    for direction in ("SELL_BTC", "BUY_BTC"):
        for fixed_side in ("exact_amount_in", "exact_amount_out"):
            # the fixed side's asset: asset_in for exact-in, asset_out for exact-out
            fixed_is_btc = (direction == "BUY_BTC") == (fixed_side == "exact_amount_in")
            sizes = scenario["sizes_by_asset"][btc_asset_id if fixed_is_btc else EURE_ID]
            assert sizes == (STREAM_SIZES_BTC if fixed_is_btc else STREAM_SIZES_EURE)
            for amount in sizes:
                assert _decide(pair, direction, fixed_side, amount, bid, ask) is Reason.EXECUTE, (
                    direction,
                    fixed_side,
                    amount,
                    walk,
                )


def test_the_sizes_span_a_few_eure_up_to_the_cap() -> None:
    bid, ask = _kraken_start()
    eure = [Decimal(s).scaleb(-18) for s in STREAM_SIZES_EURE]
    btc_worth = [Decimal(s).scaleb(-8) * (bid + ask) / 2 for s in STREAM_SIZES_BTC]
    for worth in (eure, btc_worth):
        assert min(worth) >= Decimal("1.4") and max(worth) >= Decimal("4.2") and max(worth) <= LIMITS.max_notional_eure


async def _stream(**kwargs: Any) -> list[dict[str, Any]]:
    """What a scenario sends, read from the simulator's own record of the requests."""
    sim = RelaySimulator(VerifierState(), RelaySimConfig(), "127.0.0.1", 0)
    try:
        sid = sim.start_scenario(**{**kwargs, "rate_per_s": 0.0})
        await sim.scenarios[sid]
        return [q.data for q in sim.quotes.values()]
    finally:
        await sim.stop()


async def test_the_stream_draws_each_fixed_side_from_its_assets_sizes() -> None:
    scenario = stream_scenario(NBTC_ID, 1.0) | {"count": 400, "seed": 3}
    quotes = await _stream(**scenario)
    active = [
        q for q in quotes if {q["defuse_asset_identifier_in"], q["defuse_asset_identifier_out"]} == {NBTC_ID, EURE_ID}
    ]
    assert len(active) > 300
    seen = set()
    for q in active:
        side = "exact_amount_in" if "exact_amount_in" in q else "exact_amount_out"
        fixed_asset = q["defuse_asset_identifier_in" if side == "exact_amount_in" else "defuse_asset_identifier_out"]
        assert int(q[side]) in (STREAM_SIZES_BTC if fixed_asset == NBTC_ID else STREAM_SIZES_EURE), q
        seen.add((q["defuse_asset_identifier_out"], side))
    # both directions (the asset quoteloop gives) from both fixed sides
    assert seen == {
        (NBTC_ID, "exact_amount_in"),
        (NBTC_ID, "exact_amount_out"),
        (EURE_ID, "exact_amount_in"),
        (EURE_ID, "exact_amount_out"),
    }


# seed 5's first requests as start_scenario streamed them before `sizes_by_asset` existed: the
# asset the taker pays (B: nBTC, E: EURe, O: another pair), the fixed side and its size
BEFORE = [
    ("B", "in", 11),
    ("B", "in", 11),
    ("E", "in", 7),
    ("B", "in", 7),
    ("B", "in", 13),
    ("E", "out", 11),
    ("B", "in", 13),
    ("E", "in", 7),
    ("O", "out", 11),
    ("O", "out", 13),
    ("E", "in", 11),
    ("E", "out", 11),
    ("B", "out", 11),
    ("B", "out", 13),
    ("O", "out", 7),
    ("B", "out", 13),
]


async def test_without_sizes_by_asset_a_seed_streams_what_it_always_did() -> None:
    quotes = await _stream(count=40, pairs=[[NBTC_ID, EURE_ID]], sizes=[7, 11, 13], seed=5)
    paid = {NBTC_ID: "B", EURE_ID: "E"}
    shape = [
        (
            paid.get(q["defuse_asset_identifier_in"], "O"),
            "in" if "exact_amount_in" in q else "out",
            int(q.get("exact_amount_in") or q["exact_amount_out"]),
        )
        for q in quotes
    ]
    assert shape[: len(BEFORE)] == BEFORE
