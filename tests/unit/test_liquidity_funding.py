"""The funding state machine: every stage and status, the delay flag, duplicates by normalised
transaction hash, and (hypothesis) that no sequence of bridge answers moves a stage backwards,
un-credits an attempt, or counts a non-credited attempt as anything but pending."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE_ID, POA_BTC_ID
from daemons.core.tx_hash import normalize_tx_hash
from daemons.liquidity_manager import funding
from daemons.liquidity_manager.funding import BridgeDeposit, FundingAttempt

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BOUND = timedelta(hours=1)
TX = "0x" + "AB" * 32


def _attempt(amount: int = 10**20) -> FundingAttempt:
    return funding.record(
        liquidity_action_id="a-1",
        account_id="me.near",
        asset_id=EURE_ID,
        chain="eth:100",
        amount=amount,
        tx_hash=TX,
        now=T0,
        deposit_address="0x" + "11" * 20,
        operator="alice",
        note="topping up",
    )


def _deposit(status: str, amount: int = 10**20, asset_id: str | None = EURE_ID) -> BridgeDeposit:
    return BridgeDeposit(
        tx_hash=normalize_tx_hash(TX),
        chain="eth:100",
        status=status,  # type: ignore[arg-type]
        amount=amount,
        asset_id=asset_id,
        address="0x" + "11" * 20,
    )


def test_record_normalises_and_starts_requested() -> None:
    a = _attempt()
    assert a.tx_hash == "0x" + "ab" * 32
    assert (a.stage, a.status, a.pending, a.watched, a.reason) == ("recorded", "requested", True, True, "topping up")
    event = a.event()
    assert (event.kind, event.status, event.amount, event.tx_hash, event.operator) == (
        "funding",
        "requested",
        10**20,
        a.tx_hash,
        "alice",
    )
    with pytest.raises(ValueError):
        funding.record(
            liquidity_action_id="x", account_id="me", asset_id=EURE_ID, chain="eth:100", amount=0, tx_hash=TX, now=T0
        )


def test_happy_path_requested_notified_pending_credited() -> None:
    a = _attempt()
    n = funding.notified(a, T0 + timedelta(seconds=1))
    assert n is not None and n.status == "notified"
    assert funding.notified(n, T0) is None  # once only
    seen = funding.advance(n, _deposit("PENDING"), T0 + timedelta(minutes=5), BOUND)
    assert seen is not None and (seen.status, seen.venue_status) == ("pending", "PENDING")
    assert funding.advance(seen, _deposit("PENDING"), T0 + timedelta(minutes=6), BOUND) is None  # no news
    done = funding.advance(seen, _deposit("COMPLETED"), T0 + timedelta(minutes=9), BOUND)
    assert done is not None
    assert (done.status, done.credited_amount, done.pending, done.watched, done.reason) == (
        "credited",
        10**20,
        False,
        False,
        None,
    )
    assert done.event().credited_amount == 10**20
    assert funding.advance(done, _deposit("FAILED"), T0 + timedelta(days=2), BOUND) is None  # credited is final


def test_credited_lower_than_recorded_says_both_figures() -> None:
    done = funding.advance(_attempt(), _deposit("CREDITED", amount=99 * 10**18), T0, BOUND)
    assert done is not None and done.status == "credited"
    assert done.credited_amount == 99 * 10**18 and done.amount == 10**20
    assert done.reason == f"credited {99 * 10**18} base units, recorded {10**20}"


def test_another_asset_credited_is_said() -> None:
    done = funding.advance(_attempt(), _deposit("COMPLETED", asset_id=POA_BTC_ID), T0, BOUND)
    assert done is not None and POA_BTC_ID in (done.reason or "")


def test_not_credited_past_the_bound_is_delayed_once_and_stays_pending() -> None:
    a = _attempt()
    assert funding.advance(a, None, T0 + BOUND - timedelta(seconds=1), BOUND) is None
    late = funding.advance(a, None, T0 + BOUND, BOUND)
    assert late is not None and (late.status, late.pending) == ("delayed", True)
    assert "not credited 3600 s after it was recorded (bound 3600 s)" in (late.reason or "")
    assert funding.advance(late, None, T0 + 2 * BOUND, BOUND) is None  # flagged once
    # seen while late: still delayed, and the sighting is reported
    seen = funding.advance(late, _deposit("PENDING"), T0 + 2 * BOUND, BOUND)
    assert seen is not None and (seen.stage, seen.status) == ("seen", "delayed")
    assert "seen by the bridge" in (seen.reason or "")
    credited = funding.advance(seen, _deposit("COMPLETED"), T0 + 3 * BOUND, BOUND)
    assert credited is not None and credited.status == "credited"


def test_seen_then_late_says_it_was_seen() -> None:
    seen = funding.advance(_attempt(), _deposit("PENDING"), T0, BOUND)
    assert seen is not None
    late = funding.advance(seen, None, T0 + BOUND, BOUND)
    assert late is not None and late.status == "delayed" and (late.reason or "").startswith("seen by the bridge but")


def test_failed_is_final_for_pending_counts_but_can_still_be_credited() -> None:
    failed = funding.advance(_attempt(), _deposit("FAILED"), T0, BOUND)
    assert failed is not None and (failed.status, failed.pending, failed.watched) == ("failed", False, True)
    assert funding.advance(failed, _deposit("FAILED"), T0, BOUND) is None
    assert funding.advance(failed, None, T0 + 5 * BOUND, BOUND) is None  # never "delayed" once failed
    assert funding.advance(failed, _deposit("PENDING"), T0, BOUND) is None  # never backwards
    done = funding.advance(failed, _deposit("COMPLETED"), T0 + BOUND, BOUND)
    assert done is not None and done.status == "credited"


@pytest.mark.parametrize(
    ("chain", "tx", "ok"),
    [
        ("eth:100", "0x" + "a" * 64, True),
        ("eth:100", "0X" + "A" * 64, True),
        ("eth:100", "a" * 64, False),
        ("eth:100", "0x" + "a" * 63, False),
        ("btc:mainnet", "f" * 64, True),
        ("btc:mainnet", "0x" + "f" * 64, False),
        ("btc:mainnet", "g" * 64, False),
        ("sol:mainnet", "5x9Zq", True),
        ("sol:mainnet", "a b", False),
    ],
)
def test_tx_hash_shapes(chain: str, tx: str, ok: bool) -> None:
    assert funding.tx_hash_fits_chain(chain, tx) is ok


def test_indexes_pending_totals_and_unmatched() -> None:
    a = _attempt()
    b = funding.record(
        liquidity_action_id="a-2",
        account_id="me.near",
        asset_id=EURE_ID,
        chain="eth:100",
        amount=5,
        tx_hash="0x" + "cd" * 32,
        now=T0,
    )
    credited = funding.advance(b, BridgeDeposit(b.tx_hash, "eth:100", "COMPLETED", 5, EURE_ID, "x"), T0, BOUND)
    assert credited is not None
    assert funding.pending_by_asset([a, credited]) == {EURE_ID: 10**20}
    first, second = _deposit("PENDING"), _deposit("COMPLETED")
    index = funding.deposits_by_tx([first, second])
    assert index == {("eth:100", a.tx_hash): first}  # newest (listed first) wins
    stranger = BridgeDeposit("0x" + "ee" * 32, "eth:100", "COMPLETED", 7, EURE_ID, "x")
    assert funding.unmatched(funding.deposits_by_tx([first, stranger]), [a]) == [stranger]


_ORDER = {"recorded": 0, "notified": 1, "seen": 2, "failed": 3, "credited": 4}
_answers = st.one_of(
    st.none(),
    st.builds(
        lambda s, amt: _deposit(s, amount=amt),
        st.sampled_from(["PENDING", "CREDITED", "COMPLETED", "FAILED"]),
        st.integers(1, 10**21),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _answers, st.integers(0, 10_000)), max_size=12))
def test_no_sequence_of_answers_goes_backwards(steps: list[tuple[bool, BridgeDeposit | None, int]]) -> None:
    a = _attempt()
    now = T0
    emitted = 0
    for notify, answer, seconds in steps:
        now += timedelta(seconds=seconds)
        before = a
        new = funding.notified(a, now) if notify else funding.advance(a, answer, now, BOUND)
        if new is None:
            continue
        emitted += 1
        a = new
        assert new != before
        assert _ORDER[new.stage] >= _ORDER[before.stage]
        if before.stage == "credited":
            raise AssertionError("a credited attempt changed")
        if new.stage == "credited":
            assert new.credited_amount is not None and not new.pending
        else:
            assert new.credited_amount is None
        assert new.pending == (new.status in ("requested", "notified", "pending", "delayed"))
        if new.status == "delayed":
            assert now - new.recorded_at >= BOUND
        if before.delayed_at is not None and new.pending:
            assert new.status == "delayed"  # late stays late until it ends
    assert emitted <= len(steps)
