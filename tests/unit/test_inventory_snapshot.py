"""Spendable, pending and freshness: the snapshot's figures from its inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE, NBTC, POA_BTC
from daemons.inventory_sync.ledger import ActionView
from daemons.inventory_sync.snapshot import (
    BridgeDeposit,
    BridgeRead,
    bridge_read,
    freshness,
    holdings,
    stale_at,
)
from daemons.venues.poa_bridge import RecentDeposits

T0 = datetime(2026, 5, 1, tzinfo=UTC)
E = 10**18
CHAIN = "eth:100"


def view(
    action_id: str,
    kind: str,
    status: str,
    amount: int | None,
    *,
    asset: str = EURE.asset_id,
    tx: str | None = None,
    burned: bool = False,
    burned_seq: int = 1,
) -> ActionView:
    return ActionView(
        liquidity_action_id=action_id,
        kind=kind,
        status=status,
        asset_id=asset,
        chain=CHAIN,
        amount=amount,
        tx_hash=tx,
        first_at=T0,
        status_at=T0,
        burned_at=T0 if burned else None,
        burned_seq=burned_seq if burned else None,
    )


def br(*deposits: tuple[str, int, str], complete: bool = True) -> dict[str, BridgeRead | None]:
    return {
        CHAIN: BridgeRead(
            CHAIN, tuple(BridgeDeposit(CHAIN, tx, EURE.asset_id, a, s) for tx, a, s in deposits), complete
        )
    }


def eure_row(
    fundings: list[ActionView],
    withdrawals: list[ActionView],
    bridge: dict[str, BridgeRead | None],
    credited: int = 100 * E,
    covered_seq: int | None = 10,
):
    held = holdings(
        (NBTC, EURE), {NBTC.asset_id: 7, EURE.asset_id: credited}, fundings, withdrawals, bridge, covered_seq
    )
    btc, eure = held.assets
    assert (btc.asset_id, btc.credited, btc.spendable, btc.decimals) == (NBTC.asset_id, 7, 7, 8)
    return eure, held.pending


def test_only_credited_is_spendable_and_pending_funding_is_reported_apart() -> None:
    eure, pending = eure_row([view("f1", "funding", "notified", 30 * E, tx="0x1")], [], br(("0x1", 30 * E, "PENDING")))
    assert (eure.credited, eure.spendable, eure.pending_in, eure.pending_out) == (100 * E, 100 * E, 30 * E, 0)
    [m] = pending
    assert (m.direction, m.source, m.liquidity_action_id, m.status, m.amount) == (
        "in",
        "liquidity_action",
        "f1",
        "notified",
        30 * E,
    )


def test_a_deposit_seen_externally_but_not_recorded_is_pending_from_the_bridge() -> None:
    eure, pending = eure_row([], [], br(("0xext", 4 * E, "PENDING"), ("0xdone", E, "COMPLETED"), ("0xf", E, "FAILED")))
    assert (eure.spendable, eure.pending_in) == (100 * E, 4 * E)
    assert [(m.source, m.tx_hash) for m in pending] == [("bridge", "0xext")]


def test_one_transfer_counts_once_whichever_source_names_it() -> None:
    f = view("f1", "funding", "pending", 30 * E, tx="0x1")
    eure, pending = eure_row([f], [], br(("0x1", 29 * E, "PENDING")))
    assert eure.pending_in == 30 * E and len(pending) == 1  # the operator's figure, once


def test_credited_at_the_bridge_is_no_longer_pending_even_before_liquidity_manager_says_so() -> None:
    f = view("f1", "funding", "pending", 30 * E, tx="0x1")
    eure, pending = eure_row([f], [], br(("0x1", 30 * E, "COMPLETED")), credited=130 * E)
    assert (eure.spendable, eure.pending_in, pending) == (130 * E, 0, [])


def test_a_bridge_deposit_of_a_credited_action_is_not_pending_and_a_refused_one_does_not_hide_it() -> None:
    done = view("f1", "funding", "credited", 30 * E, tx="0x1")
    refused = view("f2", "funding", "refused", 5 * E, tx="0x2")
    eure, pending = eure_row([done, refused], [], br(("0x1", 30 * E, "PENDING"), ("0x2", 5 * E, "PENDING")))
    assert eure.pending_in == 5 * E and [(m.source, m.tx_hash) for m in pending] == [("bridge", "0x2")]


def test_without_the_bridge_actions_still_count() -> None:
    eure, _ = eure_row([view("f1", "funding", "requested", 3 * E, tx="0x1")], [], {CHAIN: None})
    assert eure.pending_in == 3 * E


@pytest.mark.parametrize(
    ("status", "burned", "reserved"),
    [
        ("requested", False, 40),
        ("issued", False, 40),
        ("pending", True, 0),
        ("delayed", True, 0),
        ("delayed", False, 40),
        ("completed", True, None),
        ("failed", False, None),
        ("refused", False, None),
    ],
)
def test_withdrawals_are_pending_out_and_reserved_until_their_burn(
    status: str, burned: bool, reserved: int | None
) -> None:
    w = view("w1", "withdrawal", status, 40 * E, burned=burned)
    eure, pending = eure_row([], [w], br())
    if reserved is None:  # finished: nothing pending, nothing reserved
        assert (eure.pending_out, eure.reserved_out, eure.spendable, pending) == (0, 0, 100 * E, [])
    else:
        assert (eure.pending_out, eure.reserved_out, eure.spendable) == (40 * E, reserved * E, (100 - reserved) * E)
        assert pending[0].direction == "out"


@pytest.mark.parametrize(("burned_seq", "covered_seq", "reserved"), [(5, 5, 0), (6, 5, 40), (5, None, 40)])
def test_a_burn_counts_as_gone_only_from_a_reading_whose_head_block_came_after_it(
    burned_seq: int, covered_seq: int | None, reserved: int
) -> None:
    """A `final` read trails the chain: a reading started after the burn was reported can still
    predate it, so the amount stays reserved until a reading's head block was taken after it."""
    w = view("w1", "withdrawal", "pending", 40 * E, burned=True, burned_seq=burned_seq)
    eure, _ = eure_row([], [w], br(), covered_seq=covered_seq)
    assert (eure.reserved_out, eure.spendable) == (reserved * E, (100 - reserved) * E)


def test_spendable_never_goes_below_zero() -> None:
    eure, _ = eure_row([], [view("w1", "withdrawal", "requested", 500 * E)], br())
    assert (eure.spendable, eure.reserved_out) == (0, 500 * E)


def test_movements_of_assets_outside_the_pair_are_listed_but_not_summed() -> None:
    f = view("f1", "funding", "pending", 1000, asset=POA_BTC.asset_id, tx="0xb")
    held = holdings((NBTC, EURE), {NBTC.asset_id: 0, EURE.asset_id: 0}, [f], [], br())
    assert [a.pending_in for a in held.assets] == [0, 0] and held.pending[0].asset_id == POA_BTC.asset_id


@settings(max_examples=300, deadline=None)
@given(
    credited=st.integers(min_value=0, max_value=10**30),
    fundings=st.lists(
        st.tuples(
            st.sampled_from(
                ["requested", "notified", "pending", "delayed", "credited", "failed", "duplicate", "refused"]
            ),
            st.integers(min_value=1, max_value=10**24),
            st.sampled_from(["PENDING", "COMPLETED", "FAILED", None]),
        ),
        max_size=8,
    ),
    withdrawals=st.lists(
        st.tuples(
            st.sampled_from(["requested", "issued", "pending", "delayed", "completed", "failed", "refused"]),
            st.integers(min_value=1, max_value=10**24),
            st.booleans(),
        ),
        max_size=5,
    ),
)
def test_invariants(
    credited: int, fundings: list[tuple[str, int, str | None]], withdrawals: list[tuple[str, int, bool]]
) -> None:
    fs = [view(f"f{i}", "funding", s, a, tx=f"0x{i:x}") for i, (s, a, _) in enumerate(fundings)]
    listed = [(f"0x{i:x}", a, b) for i, (_, a, b) in enumerate(fundings) if b is not None]
    ws = [
        view(f"w{i}", "withdrawal", s, a, burned=b or s in ("pending", "completed"))
        for i, (s, a, b) in enumerate(withdrawals)
    ]
    held = holdings((NBTC, EURE), {NBTC.asset_id: 0, EURE.asset_id: credited}, fs, ws, br(*listed), 10)
    eure = held.assets[1]
    # spendable is credited less what is committed to leave, never more than credited
    assert eure.spendable <= credited and eure.spendable == max(0, credited - eure.reserved_out)
    assert eure.reserved_out <= eure.pending_out
    # nothing pending inbound is ever spendable: pending_in does not enter the figure at all
    assert eure.pending_in == sum(m.amount or 0 for m in held.pending if m.direction == "in")
    # each transfer at most once
    txs = [m.tx_hash for m in held.pending if m.direction == "in"]
    assert len(txs) == len(set(txs))
    expected_in = sum(
        a for (s, a, b) in fundings if s in ("requested", "notified", "pending", "delayed") and b not in ("COMPLETED",)
    )
    expected_in += sum(a for (s, a, b) in fundings if b == "PENDING" and s in ("failed", "duplicate", "refused"))
    assert eure.pending_in == expected_in


def test_bridge_read_knows_whether_its_list_is_complete() -> None:
    raw = {
        "deposits": [
            {
                "tx_hash": "0xAB",
                "chain": CHAIN,
                "near_token_id": EURE.near_token_id,
                "decimals": 18,
                "amount": Decimal("1000000000000000000"),
                "account_id": "a",
                "address": "0x1",
                "status": "PENDING",
            }
        ],
        "total": 1,
    }
    read = bridge_read(CHAIN, RecentDeposits.model_validate(raw), limit=100)
    assert read.complete and read.find("0xab") == BridgeDeposit(CHAIN, "0xab", EURE.asset_id, E, "PENDING")
    assert not bridge_read(CHAIN, RecentDeposits.model_validate({**raw, "total": 250}), limit=100).complete
    no_total = {"deposits": raw["deposits"]}
    assert bridge_read(CHAIN, RecentDeposits.model_validate(no_total), limit=100).complete
    assert not bridge_read(CHAIN, RecentDeposits.model_validate(no_total), limit=1).complete


def test_freshness_bounds() -> None:
    never = freshness(None, T0, 1000)
    assert (never.age_ms, never.stale) == (None, True)
    f = freshness(T0, T0 + timedelta(milliseconds=1000), 1000)
    assert (f.age_ms, f.stale) == (1000, False)
    f = freshness(T0, T0 + timedelta(milliseconds=1001), 1000)
    assert (f.age_ms, f.stale) == (1001, True)
    f = freshness(T0, T0 - timedelta(seconds=3), 1000)  # the clock stepped back
    assert (f.age_ms, f.stale) == (0, False)
    assert stale_at(None, 1000) is None


@settings(max_examples=300, deadline=None)
@given(bound=st.integers(min_value=1, max_value=10**7), micros=st.integers(min_value=0, max_value=10**11))
def test_stale_at_is_exactly_when_freshness_turns(bound: int, micros: int) -> None:
    now = T0 + timedelta(microseconds=micros)
    turns = stale_at(T0, bound)
    assert turns is not None
    assert freshness(T0, now, bound).stale is (now >= turns)
    assert freshness(T0, now, bound).age_ms == micros // 1000
