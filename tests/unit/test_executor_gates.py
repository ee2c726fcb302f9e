"""The executor's checks before signing, and its late inventory check (pure)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID, ActivePair
from daemons.core.ceilings import Ceilings
from daemons.core.events import ExecuteTrade
from daemons.trade_executor.gates import (
    GateInputs,
    InventoryView,
    PriceView,
    SendInputs,
    check_ceilings,
    check_inventory,
    check_price,
    command_problem,
    command_refusal,
    send_refusal,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PAIR = ActivePair(NBTC_ID)
OPEN = GateInputs(
    now=NOW,
    paused=False,
    draining=False,
    armed=True,
    signer_problem=None,
    relay_connected=True,
    max_min_deadline_ms=120_000,
)


def cmd(**over: object) -> ExecuteTrade:
    base: dict[str, object] = dict(
        command_id=str(uuid.uuid4()),
        decision_id="d",
        quote_id="q",
        direction="BUY_BTC",
        asset_in=NBTC_ID,
        asset_out=EURE_ID,
        amount_in=100_000,
        amount_out=89 * 10**18,
        fixed_side="exact_amount_in",
        min_deadline_ms=60_000,
        answer_by=NOW + timedelta(seconds=1),
    )
    base.update(over)
    return ExecuteTrade(**base)  # type: ignore[arg-type]


def view(
    spendable: int = 100 * 10**18, *, stale: bool = False, age_ms: int = 0, observed_at: datetime = NOW
) -> InventoryView:
    return InventoryView(
        inventory_id="inv-1",
        spendable={EURE_ID: spendable, NBTC_ID: 10**8},
        stale=stale,
        stale_reason="sync failed" if stale else None,
        age_ms=age_ms,
        observed_at=observed_at,
        account_id="solver.near",
    )


def test_an_open_gate_passes() -> None:
    assert command_refusal(cmd(), PAIR, OPEN) is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"draining": True}, "draining"),
        ({"paused": True}, "paused"),
        ({"armed": False}, "disarmed"),
        ({"signer_problem": "signer key_missing: gone"}, "signer_unavailable"),
        ({"relay_connected": False}, "relay_disconnected"),
        ({"now": NOW + timedelta(seconds=1)}, "answer_by_passed"),
        ({"max_min_deadline_ms": 59_999}, "deadline_too_long"),
    ],
)
def test_each_gate_refuses_with_its_code(change: dict[str, object], code: str) -> None:
    refusal = command_refusal(cmd(), PAIR, replace(OPEN, **change))  # type: ignore[arg-type]
    assert refusal is not None and refusal.code == code and refusal.reason


def test_gates_are_checked_in_order() -> None:
    everything = replace(OPEN, paused=True, armed=False, relay_connected=False)
    refusal = command_refusal(cmd(), PAIR, everything)
    assert refusal is not None and refusal.code == "paused"
    refusal = command_refusal(cmd(), PAIR, replace(everything, paused=False))
    assert refusal is not None and refusal.code == "disarmed"


@pytest.mark.parametrize(
    "over",
    [
        {"asset_in": POA_BTC_ID},  # legacy BTC while nBTC is active
        {"asset_out": "nep141:wrap.near"},  # not the pair
        {"direction": "SELL_BTC"},  # direction contradicts the assets
        {"amount_out": 0},
    ],
)
def test_commands_that_cannot_be_answered_as_given(over: dict[str, object]) -> None:
    assert command_problem(cmd(**over), PAIR) is not None
    refusal = command_refusal(cmd(**over), PAIR, OPEN)
    assert refusal is not None and refusal.code == "invalid_command"


def test_inventory_missing_stale_and_old_are_refused() -> None:
    c = check_inventory(None, EURE_ID, 1, 0, NOW, 30_000)
    assert not c.ok and c.refusal is not None and c.refusal.code == "inventory_missing"
    c = check_inventory(view(stale=True), EURE_ID, 1, 0, NOW, 30_000)
    assert c.refusal is not None and c.refusal.code == "inventory_stale" and "sync failed" in c.refusal.reason
    # its own age plus the time since it was published
    old = view(age_ms=20_000, observed_at=NOW - timedelta(seconds=10, milliseconds=1))
    c = check_inventory(old, EURE_ID, 1, 0, NOW, 30_000)
    assert c.refusal is not None and c.refusal.code == "inventory_stale"
    c = check_inventory(view(age_ms=20_000, observed_at=NOW - timedelta(seconds=10)), EURE_ID, 1, 0, NOW, 30_000)
    assert c.ok


def test_a_snapshot_of_another_account_is_refused() -> None:
    c = check_inventory(view(), EURE_ID, 1, 0, NOW, 30_000, "other.near")
    assert c.refusal is not None and c.refusal.code == "inventory_wrong_account" and "other.near" in c.refusal.reason
    assert check_inventory(view(), EURE_ID, 1, 0, NOW, 30_000, "solver.near").ok


def test_shortfall_is_reported_with_the_figures() -> None:
    c = check_inventory(view(100), EURE_ID, 61, 40, NOW, 30_000)
    assert not c.ok and c.refusal is not None and c.refusal.code == "insufficient_inventory"
    assert (c.refusal.spendable, c.refusal.reserved, c.refusal.inventory_id) == (100, 40, "inv-1")
    assert "detected late" in c.refusal.reason and "100" in c.refusal.reason and "40" in c.refusal.reason
    assert check_inventory(view(100), EURE_ID, 60, 40, NOW, 30_000).ok  # exactly enough
    # an asset the snapshot does not list has nothing spendable
    c = check_inventory(view(100), "nep141:wrap.near", 1, 0, NOW, 30_000)
    assert c.refusal is not None and c.refusal.code == "insufficient_inventory"


@given(spendable=st.integers(0, 2**128 - 1), reserved=st.integers(0, 2**128 - 1), amount=st.integers(1, 2**128 - 1))
def test_an_answer_fires_exactly_when_credited_minus_reserved_covers_it(
    spendable: int, reserved: int, amount: int
) -> None:
    c = check_inventory(view(spendable), EURE_ID, amount, reserved, NOW, 30_000)
    assert c.ok is (spendable - reserved >= amount)
    assert c.spendable == spendable and c.reserved == reserved


# --- the executor's own second key: ceilings, price, and the check right before the write ----

CEILINGS = Ceilings(
    min_edge_pct=Decimal("1.0"),
    max_notional_eure_per_answer=Decimal("100"),
    max_price_age_ms=5_000,
    max_inventory_age_ms=30_000,
    max_give_per_answer={"BTC": Decimal("0.01"), "EURe": Decimal("95")},
    max_live_exposure={"BTC": Decimal("0.1"), "EURe": Decimal("200")},
)


def price(
    bid: str = "92000", *, decisionable: bool = True, freshness_ms: int = 0, observed_at: datetime = NOW
) -> PriceView:
    return PriceView(
        event_id="p-1",
        fair_rate_buy_btc=Decimal(bid),
        fair_rate_sell_btc=Decimal(bid) + 10,
        decisionable=decisionable,
        status_reason=None if decisionable else "SOURCE_CONFLICT",
        freshness_ms=freshness_ms,
        observed_at=observed_at,
    )


@pytest.mark.parametrize(
    ("command", "live", "code"),
    [
        (cmd(), 0, None),
        (cmd(amount_out=96 * 10**18, amount_in=110_000), 0, "over_give_ceiling"),
        (cmd(), 112 * 10**18, "over_exposure_ceiling"),  # 112 + 89 = 201 > 200
        (cmd(), 111 * 10**18, None),  # exactly 200
        # SELL_BTC: gives 0.002 BTC (within 0.01) for 120 EURe: the EURe side is over 100
        (
            cmd(direction="SELL_BTC", asset_in=EURE_ID, asset_out=NBTC_ID, amount_in=120 * 10**18, amount_out=200_000),
            0,
            "over_notional_ceiling",
        ),
    ],
)
def test_ceilings_bound_the_answer_and_the_live_exposure(command: ExecuteTrade, live: int, code: str | None) -> None:
    refusal = check_ceilings(command, PAIR, CEILINGS, live)
    assert (refusal.code if refusal else None) == code


@pytest.mark.parametrize(
    ("view_", "code"),
    [
        (price(), None),  # 100,000 sat at 92,000 = 92 EURe for 89 given: +3.4 %
        (price("89890"), None),  # +1.0 %: the floor itself
        (price("89880"), "edge_below_floor"),
        (price("60000"), "edge_below_floor"),
        (None, "price_missing"),
        (price(decisionable=False), "price_not_decisionable"),
        (price(freshness_ms=5_001), "price_stale"),
        (price(freshness_ms=1_000, observed_at=NOW - timedelta(seconds=4, milliseconds=1)), "price_stale"),
    ],
)
def test_the_price_check_holds_the_floor_on_a_fresh_price(view_: PriceView | None, code: str | None) -> None:
    refusal = check_price(cmd(), PAIR, view_, NOW, CEILINGS)
    assert (refusal.code if refusal else None) == code


def test_the_price_check_values_a_sale_at_the_ask() -> None:
    # SELL_BTC: quoteloop gives 0.001 BTC (worth 92,010 × 0.001 at the ask) for 93 EURe: +1.08 %
    sale = cmd(direction="SELL_BTC", asset_in=EURE_ID, asset_out=NBTC_ID, amount_in=93 * 10**18, amount_out=100_000)
    assert check_price(sale, PAIR, price("92000"), NOW, CEILINGS) is None
    assert check_price(sale, PAIR, price("92100"), NOW, CEILINGS) is not None  # ask 92,110: +0.97 %


def _send(**over: object) -> SendInputs:
    base: dict[str, object] = dict(
        now=NOW, armed=True, price=price(), inventory=view(), inventory_max_age_ms=30_000, live_exposure=89 * 10**18
    )
    base.update(over)
    return SendInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({}, None),
        ({"armed": False}, "disarmed"),
        ({"now": NOW + timedelta(seconds=1)}, "answer_by_passed"),
        ({"price": price(freshness_ms=6_000)}, "price_stale"),
        ({"price": None}, "price_missing"),
        ({"inventory": view(stale=True)}, "inventory_stale"),
        ({"inventory": None}, "inventory_stale"),
        ({"live_exposure": 201 * 10**18}, "over_exposure_ceiling"),
    ],
)
def test_the_last_check_before_the_write(change: dict[str, object], code: str | None) -> None:
    refusal = send_refusal(cmd(), PAIR, CEILINGS, _send(**change))
    assert (refusal.code if refusal else None) == code
    assert refusal is None or refusal.reason.startswith("not sent: ")
