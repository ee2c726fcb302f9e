"""The gate pipeline, one test per reason, and the cases the pricing and gates
must get right (docs/design.md §3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID, ActivePair
from daemons.core.events import SwapDemand
from daemons.core.inventory import InventoryView
from daemons.strategy_engine.gates import Context, Limits, PriceView, Reason, decide
from daemons.strategy_engine.reservations import Reservations

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
PAIR = ActivePair(NBTC_ID)
LIMITS = Limits(
    threshold_pct=Decimal("2.0"),
    target_edge_pct=Decimal("2.5"),
    min_notional_eure=Decimal("1"),
    max_notional_eure=Decimal("5"),
)
PRICE = PriceView(
    event_id="p1",
    fair_rate_buy_btc=Decimal("59990"),
    fair_rate_sell_btc=Decimal("60010"),
    age_ms=100,
    decisionable=True,
    source="kraken",
)
BTC_1E = 10**8
INVENTORY = InventoryView(
    inventory_id="i1",
    spendable={NBTC_ID: BTC_1E // 100, EURE_ID: 100 * 10**18},
    age_ms=500,
    observed_at=NOW,
    stale=False,
)


def demand(
    direction: str = "SELL_BTC", fixed_side: str = "exact_amount_in", amount: int | None = None, **kw: object
) -> SwapDemand:
    asset_in, asset_out = (EURE_ID, NBTC_ID) if direction == "SELL_BTC" else (NBTC_ID, EURE_ID)
    if amount is None:  # about 3 EURe either way
        eure_side = (direction == "SELL_BTC") == (fixed_side == "exact_amount_in")
        amount = 3 * 10**18 if eure_side else 5000
    fields = dict(
        quote_id="q1",
        direction=direction,
        asset_in=asset_in,
        asset_out=asset_out,
        asset_in_decimals=PAIR.decimals(asset_in),
        asset_out_decimals=PAIR.decimals(asset_out),
        fixed_side=fixed_side,
        fixed_amount=amount,
        min_deadline_ms=60_000,
        received_at=NOW - timedelta(milliseconds=100),
    )
    fields.update(kw)
    return SwapDemand(**fields)  # type: ignore[arg-type]


def ctx(**kw: object) -> Context:
    base = dict(
        demand=demand(),
        now=NOW,
        pair=PAIR,
        limits=LIMITS,
        paused=False,
        armed=True,
        repeat=False,
        price=PRICE,
        inventory=INVENTORY,
        reserved={},
        audit_impaired=False,
    )
    base.update(kw)
    return Context(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("direction", ["SELL_BTC", "BUY_BTC"])
@pytest.mark.parametrize("fixed_side", ["exact_amount_in", "exact_amount_out"])
def test_all_gates_pass_in_both_directions_and_fixed_sides(direction: str, fixed_side: str) -> None:
    v = decide(ctx(demand=demand(direction, fixed_side)))
    assert v.reason is Reason.EXECUTE, v.detail
    assert v.candidate is not None and v.candidate.gross_edge_pct >= LIMITS.threshold_pct
    # the fair rate of the side: ask when quoteloop gives BTC, bid when it receives BTC
    expected_rate = PRICE.fair_rate_sell_btc if direction == "SELL_BTC" else PRICE.fair_rate_buy_btc
    assert v.candidate.reference_rate == expected_rate


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(paused=True), Reason.PAUSED),
        (dict(demand=demand(asset_out=POA_BTC_ID)), Reason.PAIR_NOT_ACTIVE),
        (dict(repeat=True), Reason.REPEATED_QUOTE_ID),
        (dict(now=NOW + timedelta(seconds=3)), Reason.REQUEST_TOO_OLD),
        (dict(demand=demand(min_deadline_ms=600_000)), Reason.DEADLINE_TOO_LONG),
        (dict(price=None), Reason.NO_PRICE),
        (dict(price=replace(PRICE, age_ms=60_000)), Reason.PRICE_STALE),
        (
            dict(price=replace(PRICE, decisionable=False, not_decisionable_reason="SOURCE_CONFLICT")),
            Reason.PRICE_NOT_DECISIONABLE,
        ),
        (dict(limits=replace(LIMITS, target_edge_pct=Decimal("1.0"))), Reason.EDGE_BELOW_THRESHOLD),
        (dict(demand=demand(amount=10**17)), Reason.NOTIONAL_BELOW_MIN),
        (dict(demand=demand(amount=50 * 10**18)), Reason.NOTIONAL_ABOVE_CAP),
        (dict(inventory=None), Reason.NO_INVENTORY),
        (dict(inventory=replace(INVENTORY, stale=True)), Reason.INVENTORY_STALE),
        (dict(inventory=replace(INVENTORY, age_ms=10**6)), Reason.INVENTORY_STALE),
        (dict(inventory=replace(INVENTORY, spendable={NBTC_ID: 10})), Reason.INSUFFICIENT_INVENTORY),
        (dict(audit_impaired=True), Reason.AUDIT_IMPAIRED),
        (dict(armed=False), Reason.DISARMED),
    ],
)
def test_each_gate_names_its_reason(change: dict, reason: Reason) -> None:
    assert decide(ctx(**change)).reason is reason


def test_stale_price_blocks_even_when_everything_else_is_fine() -> None:
    v = decide(ctx(price=replace(PRICE, age_ms=LIMITS.price_max_age_ms + 1)))
    assert v.reason is Reason.PRICE_STALE and v.candidate is None


def test_a_pending_deposit_is_not_spendable_and_has_its_own_reason() -> None:
    inv = replace(INVENTORY, spendable={NBTC_ID: 100}, pending_in={NBTC_ID: BTC_1E})
    v = decide(ctx(inventory=inv))
    assert v.reason is Reason.PENDING_DEPOSIT_NOT_CREDITED
    assert v.spendable == 100 and v.pending_in == BTC_1E


def test_one_direction_affordable_and_the_other_not() -> None:
    inv = replace(INVENTORY, spendable={NBTC_ID: BTC_1E, EURE_ID: 0})
    assert decide(ctx(inventory=inv, demand=demand("SELL_BTC"))).reason is Reason.EXECUTE  # gives BTC
    assert decide(ctx(inventory=inv, demand=demand("BUY_BTC"))).reason is Reason.INSUFFICIENT_INVENTORY  # EURe


def test_disarmed_still_decides_and_reports_every_figure() -> None:
    v = decide(ctx(armed=False))
    assert v.reason is Reason.DISARMED and v.candidate is not None and v.credited == INVENTORY.spendable[NBTC_ID]


def test_the_buffer_and_reservations_come_off_the_credited_balance() -> None:
    need = decide(ctx()).candidate.amount_out  # type: ignore[union-attr]
    credited = INVENTORY.spendable[NBTC_ID]
    assert decide(ctx(reserved={NBTC_ID: credited - need})).reason is Reason.EXECUTE
    assert decide(ctx(reserved={NBTC_ID: credited - need + 1})).reason is Reason.INSUFFICIENT_INVENTORY
    limits = replace(LIMITS, buffer={NBTC_ID: credited - need + 1})
    assert decide(ctx(limits=limits)).reason is Reason.INSUFFICIENT_INVENTORY


def test_reservations_prevent_over_commitment_across_concurrent_requests() -> None:
    """Three requests in flight against inventory for two: the third is refused."""
    need = decide(ctx()).candidate.amount_out  # type: ignore[union-attr]
    inv = replace(INVENTORY, spendable={NBTC_ID: 2 * need})
    book = Reservations()
    reasons = []
    for i in range(3):
        v = decide(ctx(inventory=inv, reserved=book.reserved(), demand=demand(quote_id=f"q{i}")))
        reasons.append(v.reason)
        if v.execute:
            book.reserve(f"c{i}", f"q{i}", NBTC_ID, v.candidate.amount_out, NOW + timedelta(minutes=1))  # type: ignore[union-attr]
    assert reasons == [Reason.EXECUTE, Reason.EXECUTE, Reason.INSUFFICIENT_INVENTORY]


def test_reservation_lifecycle() -> None:
    book = Reservations()
    book.reserve("c1", "q1", NBTC_ID, 10, NOW + timedelta(seconds=60))
    book.reserve("c2", "q2", NBTC_ID, 20, NOW + timedelta(seconds=60))
    book.reserve("c3", "q3", EURE_ID, 30, NOW + timedelta(seconds=60))
    assert book.reserved() == {NBTC_ID: 30, EURE_ID: 30}
    book.on_result("c1", "rejected", (0, 4))
    assert book.reserved() == {NBTC_ID: 20, EURE_ID: 30}
    book.on_result("c2", "settled", (0, 7))  # its result is offset 7 of partition 0
    book.on_inventory(None)  # a snapshot that proves nothing about settlements
    book.on_inventory({0: 7})  # read before that result was published: may predate the fill
    assert book.reserved()[NBTC_ID] == 20
    book.on_inventory({0: 8})
    assert NBTC_ID not in book.reserved()
    book.on_result("c3", "acknowledged", (0, 9), deadline=NOW + timedelta(seconds=90))
    book.expire(NOW + timedelta(seconds=61))
    assert book.reserved() == {EURE_ID: 30}  # the acknowledged answer lives to its deadline
    book.expire(NOW + timedelta(seconds=91))
    assert book.reserved() == {}
