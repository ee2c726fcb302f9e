"""The liquidity ledger: the fold of `ops.liquidity_action` into one view per action."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE_ID
from daemons.core.events import LiquidityAction
from daemons.inventory_sync.ledger import LiquidityLedger

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


def act(status: str, kind: str = "funding", action_id: str = "a1", **kw: Any) -> LiquidityAction:
    return LiquidityAction(liquidity_action_id=action_id, kind=kind, status=status, **kw)  # type: ignore[arg-type]


def apply(ledger: LiquidityLedger, action: LiquidityAction, s: int) -> Any:
    return ledger.apply(uuid.uuid4(), action, at(s))


def test_latest_status_first_amount_latest_details() -> None:
    ledger = LiquidityLedger()
    apply(ledger, act("requested", asset_id=EURE_ID, chain="eth:100", amount=100, tx_hash="0xABC"), 1)
    apply(ledger, act("notified"), 2)
    # the bridge credited less; liquidity-manager may restate the amount: the operator's figure stays
    view = apply(ledger, act("credited", amount=90), 3)
    assert (view.status, view.amount, view.asset_id, view.chain, view.tx_hash) == (
        "credited",
        100,
        EURE_ID,
        "eth:100",
        "0xabc",
    )
    assert view.credited_at == at(3) and view.first_at == at(1) and view.done and not view.pending


def test_out_of_order_delivery_keeps_the_latest_status_and_the_earliest_amount() -> None:
    ledger = LiquidityLedger()
    apply(ledger, act("credited", amount=90, asset_id=EURE_ID), 5)
    view = apply(ledger, act("requested", amount=100), 1)
    assert (view.status, view.amount, view.first_at, view.credited_at) == ("credited", 100, at(1), at(5))


def test_a_repeated_delivery_changes_nothing() -> None:
    ledger = LiquidityLedger()
    event_id = uuid.uuid4()
    assert ledger.apply(event_id, act("requested", amount=1), at(1)) is not None
    assert ledger.apply(event_id, act("credited"), at(2)) is None  # same event id: ignored
    assert ledger.get("a1").status == "requested" and ledger.events_applied == 1  # type: ignore[union-attr]


def test_other_kinds_are_not_tracked() -> None:
    ledger = LiquidityLedger()
    assert apply(ledger, act("issued", kind="deposit_address", address="0x1"), 1) is None
    assert apply(ledger, act("frozen", kind="freeze", action_id="z"), 1) is None
    assert len(ledger) == 0


def test_actions_first_recorded_before_the_cutover_are_ignored_with_their_later_events() -> None:
    ledger = LiquidityLedger(since=at(10))
    assert apply(ledger, act("requested", amount=1), 5) is None
    assert apply(ledger, act("credited"), 15) is None  # the same action, after the cut-over
    assert apply(ledger, act("requested", action_id="new", amount=2), 15) is not None
    assert [v.liquidity_action_id for v in ledger] == ["new"] and ledger.ignored == 1


@pytest.mark.parametrize(
    ("kind", "status", "pending"),
    [
        ("funding", "requested", True),
        ("funding", "notified", True),
        ("funding", "pending", True),
        ("funding", "delayed", True),
        ("funding", "credited", False),
        ("funding", "failed", False),
        ("funding", "duplicate", False),
        ("funding", "refused", False),
        ("withdrawal", "requested", True),
        ("withdrawal", "issued", True),
        ("withdrawal", "pending", True),
        ("withdrawal", "delayed", True),
        ("withdrawal", "completed", False),
        ("withdrawal", "failed", False),
        ("withdrawal", "refused", False),
    ],
)
def test_pending_rules(kind: str, status: str, pending: bool) -> None:
    ledger = LiquidityLedger()
    assert apply(ledger, act(status, kind=kind), 1).pending is pending


def test_a_withdrawal_is_burned_once_its_tx_is_known_or_it_is_pending_at_the_bridge() -> None:
    ledger = LiquidityLedger()
    assert not apply(ledger, act("requested", kind="withdrawal", amount=5), 1).burned
    assert not apply(ledger, act("issued", kind="withdrawal"), 2).burned  # published, not yet settled
    view = apply(ledger, act("pending", kind="withdrawal", tx_hash="BurnTx"), 3)
    assert view.burned and view.burned_at == at(3) and view.tx_hash == "BurnTx"
    other = LiquidityLedger()
    assert apply(other, act("delayed", kind="withdrawal", tx_hash="t"), 1).burned


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(6))))
def test_the_fold_does_not_depend_on_delivery_order(order: list[int]) -> None:
    statuses = ["requested", "notified", "pending", "delayed", "pending", "credited"]
    events = [
        (
            uuid.uuid4(),
            act(s, amount=100 + i if i in (0, 3) else None, asset_id=EURE_ID, chain="eth:100", tx_hash="0xAA"),
            at(i),
        )
        for i, s in enumerate(statuses)
    ]
    ledger = LiquidityLedger()
    for i in order:
        ledger.apply(*events[i])
    view = ledger.get("a1")
    assert view is not None
    assert (view.status, view.amount, view.first_at, view.credited_at, view.tx_hash) == (
        "credited",
        100,
        at(0),
        at(5),
        "0xaa",
    )
