"""Live answers, their reservations and how each unresolved ledger state is recovered (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.trade_executor.ledger import LIVE, UNRESOLVED, LedgerState
from daemons.trade_executor.settlement import (
    LiveAnswer,
    LiveBook,
    RecoveryStep,
    cancel_succeeded,
    expiry_reason,
    is_due,
    recovery_step,
)

S = LedgerState
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
BTC = "nep141:nbtc.bridge.near"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def live(
    cid: str,
    amount: int,
    *,
    asset: str = EURE,
    state: S = S.ACKNOWLEDGED,
    deadline: datetime | None = NOW,
    quote_hash: str | None = None,
    nonce: str | None = "bm9uY2U=",
) -> LiveAnswer:
    return LiveAnswer(
        command_id=cid,
        quote_id=f"q-{cid}",
        asset_out=asset,
        amount_out=amount,
        state=state,
        signer_id="solver.near",
        nonce=nonce,
        deadline=deadline,
        quote_hash=quote_hash or f"h-{cid}",
    )


def test_holds_add_up_per_asset_and_release_frees_them() -> None:
    book = LiveBook()
    book.hold(live("a", 10))
    book.hold(live("b", 5))
    book.hold(live("c", 7, asset=BTC))
    assert book.reserved(EURE) == 15 and book.reserved(BTC) == 7
    assert book.reserved_by_asset() == {EURE: 15, BTC: 7}
    assert book.by_hash["h-a"] == "a" and book.by_quote["q-a"] == "a"
    released = book.release("a")
    assert released is not None and book.reserved(EURE) == 5
    assert "h-a" not in book.by_hash and "q-a" not in book.by_quote
    assert book.release("a") is None  # twice is harmless


def test_a_settled_answer_holds_until_a_snapshot_covers_its_result() -> None:
    book = LiveBook()
    book.hold(live("a", 10))
    book.release("a", settled=True)
    assert book.reserved(EURE) == 10  # the snapshot in hand still counts what just left
    book.forget_covered({0: 100})  # the result is not published yet: no snapshot can prove it
    assert book.reserved(EURE) == 10 and book.unplaced() == ["a"]
    book.place_settled("a", {0: 8})  # published at offset 7 of partition 0
    book.forget_covered(None)
    book.forget_covered({0: 7})  # the head was read before that result existed
    book.forget_covered({1: 50})
    assert book.reserved(EURE) == 10
    book.forget_covered({0: 8, 1: 0})
    assert book.reserved(EURE) == 0 and book.settled == {}


def test_update_moves_the_hash_index() -> None:
    book = LiveBook()
    book.hold(live("a", 10, state=S.RECEIVED, quote_hash=None, nonce=None))
    assert book.by_hash == {"h-a": "a"}  # the helper's default hash
    book.update("a", state=S.SUBMITTED, quote_hash="real")
    assert book.by_hash == {"real": "a"} and book.answers["a"].state is S.SUBMITTED
    assert book.update("missing", state=S.SETTLED) is None


def test_due_answers_are_the_live_ones_past_deadline_and_grace() -> None:
    book = LiveBook()
    book.hold(live("past", 1, deadline=NOW - timedelta(seconds=2)))
    book.hold(live("grace", 1, deadline=NOW - timedelta(milliseconds=500)))
    book.hold(live("future", 1, deadline=NOW + timedelta(seconds=1)))
    book.hold(live("unsigned", 1, state=S.RECEIVED, nonce=None, deadline=None))
    book.hold(live("busy", 1, deadline=NOW - timedelta(seconds=5)))
    due = {a.command_id for a in book.due(NOW, 1_000, skip={"busy"})}
    assert due == {"past"}


@given(offset_ms=st.integers(-10_000, 10_000), grace_ms=st.integers(0, 5_000))
def test_is_due_exactly_at_deadline_plus_grace(offset_ms: int, grace_ms: int) -> None:
    deadline = NOW + timedelta(milliseconds=offset_ms)
    assert is_due(deadline, NOW, grace_ms) is (NOW >= deadline + timedelta(milliseconds=grace_ms))
    assert is_due(None, NOW, grace_ms) is False


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (S.RECEIVED, RecoveryStep.REFUSE),
        (S.SIGNING, RecoveryStep.RESOLVE_NOW),
        (S.SUBMITTED, RecoveryStep.MARK_UNCERTAIN),
        (S.ACKNOWLEDGED, RecoveryStep.WATCH),
        (S.UNCERTAIN, RecoveryStep.WATCH),
    ],
)
def test_every_unresolved_state_has_a_recovery_step(state: S, step: RecoveryStep) -> None:
    assert recovery_step(state) is step


def test_resolved_states_need_no_recovery_and_nothing_is_ever_resent() -> None:
    assert {s for s in S if recovery_step(s) is not None} == UNRESOLVED
    assert all(recovery_step(s) is not None for s in LIVE)
    assert "resend" not in {step.value for step in RecoveryStep}


def test_expiry_reasons_say_why() -> None:
    assert "cancelled" in expiry_reason(replace(live("a", 1), cancel_requested=True))
    assert "uncertain" in expiry_reason(live("a", 1, state=S.UNCERTAIN))
    assert "not picked" in expiry_reason(live("a", 1))
    assert cancel_succeeded({"status": "OK"}) and not cancel_succeeded({"status": "FAILED"})
    assert not cancel_succeeded(None)


_cids = st.sampled_from([f"c{i}" for i in range(5)])
_book_ops = st.one_of(
    st.tuples(st.just("hold"), _cids, st.sampled_from([EURE, BTC]), st.integers(1, 1000)),
    st.tuples(st.just("update"), _cids, st.integers(1, 1000)),
    st.tuples(st.just("release"), _cids, st.booleans()),
    st.tuples(st.just("note_settled"), _cids, st.sampled_from([EURE, BTC]), st.integers(1, 1000)),
    st.tuples(st.just("place"), _cids, st.integers(0, 60)),
    st.tuples(st.just("forget"), st.integers(0, 60)),
)


@given(st.lists(_book_ops, max_size=40))
def test_the_kept_totals_always_equal_the_sum_of_what_is_held(ops: list[tuple]) -> None:
    book = LiveBook()
    for op in ops:
        if op[0] == "hold":
            book.hold(live(op[1], op[3], asset=op[2]))
        elif op[0] == "update":
            book.update(op[1], amount_out=op[2])
        elif op[0] == "release":
            book.release(op[1], settled=op[2])
        elif op[0] == "note_settled":
            book.note_settled(op[1], op[2], op[3])
        elif op[0] == "place":
            book.place_settled(op[1], {0: op[2]})
        else:
            book.forget_covered({0: op[1]})
        expected: dict[str, int] = {}
        for a in book.answers.values():
            expected[a.asset_out] = expected.get(a.asset_out, 0) + a.amount_out
        for _, asset, amount in book.settled.values():
            expected[asset] = expected.get(asset, 0) + amount
        assert book.reserved_by_asset() == expected
        assert all(book.reserved(asset) == expected.get(asset, 0) for asset in (EURE, BTC))


def test_a_withheld_answer_holds_until_its_deadline_and_counts_as_live_exposure() -> None:
    book = LiveBook()
    book.hold(live("a", 10, deadline=NOW + timedelta(seconds=5)))
    book.hold(live("b", 4))
    book.release("b", settled=True)  # spent, waiting for a snapshot: reserved, not exposure
    assert (book.reserved(EURE), book.live_exposure(EURE)) == (14, 10)
    book.withhold("a")
    assert "a" not in book.answers and "a" in book.withheld
    assert (book.reserved(EURE), book.live_exposure(EURE)) == (14, 10)
    assert book.release_withheld(NOW + timedelta(seconds=5), grace_ms=100) == []  # could still execute
    assert book.release_withheld(NOW + timedelta(seconds=5, milliseconds=100), grace_ms=100) == ["a"]
    assert (book.reserved(EURE), book.live_exposure(EURE)) == (4, 0)
    book.note_withheld("r", NOW + timedelta(seconds=1), EURE, 3)  # recovered at a restart
    book.note_withheld("r", NOW + timedelta(seconds=1), EURE, 3)  # twice is once
    assert book.live_exposure(EURE) == 3
