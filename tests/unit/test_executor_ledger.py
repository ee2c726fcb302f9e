"""The executor ledger's state machine and the result built from a row (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.events import Producer, TradeResult, decode, encode, new_event
from daemons.trade_executor.ledger import (
    FINAL,
    LIVE,
    RESULT_STATUS,
    TRANSITIONS,
    UNRESOLVED,
    IllegalTransition,
    LedgerRow,
    LedgerState,
    can_transition,
    check_transition,
    execution_id_for,
    resolve_by_nonce,
    result_from_row,
    sources_of,
)

S = LedgerState
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# The ledger's state machine (docs/design.md §5), written out once more by hand: the code must match it exactly.
EXPECTED = {
    (S.RECEIVED, S.SIGNING),
    (S.RECEIVED, S.SUBMITTED),
    (S.RECEIVED, S.REFUSED),
    (S.SIGNING, S.SUBMITTED),
    (S.SIGNING, S.SETTLED),
    (S.SIGNING, S.EXPIRED),
    (S.SUBMITTED, S.ACKNOWLEDGED),
    (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.UNCERTAIN),
    (S.SUBMITTED, S.SETTLED),
    (S.SUBMITTED, S.EXPIRED),
    (S.ACKNOWLEDGED, S.SETTLED),
    (S.ACKNOWLEDGED, S.EXPIRED),
    (S.UNCERTAIN, S.SETTLED),
    (S.UNCERTAIN, S.EXPIRED),
    (S.EXPIRED, S.SETTLED),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_every_pair_of_states_is_allowed_or_refused_as_specified(current: S, target: S) -> None:
    allowed = (current, target) in EXPECTED
    assert can_transition(current, target) is allowed
    if allowed:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_state_groups() -> None:
    assert FINAL == {S.REJECTED, S.SETTLED, S.REFUSED} and all(not TRANSITIONS[s] for s in FINAL)
    assert LIVE == {S.SIGNING, S.SUBMITTED, S.ACKNOWLEDGED, S.UNCERTAIN}
    assert UNRESOLVED == LIVE | {S.RECEIVED}
    # nothing is ever answered without passing through submitted (nonce and signature stored)
    assert sources_of(S.ACKNOWLEDGED) == {S.SUBMITTED} and sources_of(S.SUBMITTED) == {S.RECEIVED, S.SIGNING}
    assert sources_of(S.SIGNING) == {S.RECEIVED} and sources_of(S.REFUSED) == {S.RECEIVED}
    assert sources_of(S.RECEIVED) == frozenset()
    assert {s for s, status in RESULT_STATUS.items() if status is None} == {S.RECEIVED, S.SIGNING, S.SUBMITTED}


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_any_walk_through_the_machine_reaches_an_answer_only_after_signing(steps: list[S]) -> None:
    state, seen = S.RECEIVED, [S.RECEIVED]
    for target in steps:
        if can_transition(state, target):
            state = target
            seen.append(state)
    for answered in (S.ACKNOWLEDGED, S.REJECTED, S.UNCERTAIN):
        if answered in seen:
            assert seen.index(S.SUBMITTED) < seen.index(answered)
    if S.REFUSED in seen:
        assert seen == [S.RECEIVED, S.REFUSED]  # refused means nothing was ever signed
    if S.SETTLED in seen:
        assert seen[-1] is S.SETTLED  # final


def test_resolution_by_nonce_follows_the_verifier() -> None:
    assert resolve_by_nonce(True) is S.SETTLED and resolve_by_nonce(False) is S.EXPIRED


def test_execution_id_is_deterministic_per_command() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert execution_id_for(a) == execution_id_for(a) != execution_id_for(b)
    uuid.UUID(execution_id_for(a))


def _row(state: S, **extra: object) -> LedgerRow:
    base: dict[str, object] = dict(
        command_id="c-1",
        quote_id="q-1",
        execution_id=execution_id_for("c-1"),
        decision_id="d-1",
        command_event_id=uuid.uuid4(),
        state=state,
        direction="BUY_BTC",
        asset_in="nep141:nbtc.bridge.near",
        asset_out="nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near",
        amount_in=100_000,
        amount_out=89 * 10**18,
        fixed_side="exact_amount_in",
        min_deadline_ms=60_000,
        answer_by=T0 + timedelta(seconds=1),
        received_at=T0,
    )
    base.update(extra)
    return LedgerRow(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [s for s, status in RESULT_STATUS.items() if status is not None])
def test_every_result_state_becomes_a_valid_trade_result_that_round_trips(state: S) -> None:
    row = _row(
        state,
        nonce="n",
        deadline=T0 + timedelta(seconds=61),
        quote_hash="h",
        signed_at=T0,
        sent_at=T0,
        venue_answered_at=T0,
        settled_at=T0 + timedelta(seconds=2),
        expired_at=T0 + timedelta(seconds=70),
        resolved_by="is_nonce_used",
        reason="why",
        reason_code="code",
        venue_response={"ok": True},
        inventory_id="inv",
        spendable_at_check=10**21,
        reserved_at_check=0,
    )
    result = result_from_row(row)
    assert result.status == RESULT_STATUS[state]
    assert (result.execution_id, result.command_id, result.quote_id) == (row.execution_id, "c-1", "q-1")
    assert (result.amount_in, result.amount_out, result.nonce, result.quote_hash) == (100_000, 89 * 10**18, "n", "h")
    assert result.command_received_at == T0 and result.venue_response == {"ok": True}
    if state is S.SETTLED:
        assert result.resolved_at == row.settled_at and result.resolved_by == "is_nonce_used"
    elif state is S.EXPIRED:
        assert result.resolved_at == row.expired_at
    else:
        assert result.resolved_at is None and result.resolved_by is None
    event = new_event(result, producer=Producer(service="t", instance="t"), pair="BTC/EURe")
    back = decode("exec.trade_result", encode(event)).payload
    assert isinstance(back, TradeResult) and back == result
    assert '"amount_out":"89000000000000000000"' in encode(event).decode()  # u128 as a string


@pytest.mark.parametrize("state", [S.RECEIVED, S.SIGNING, S.SUBMITTED])
def test_states_in_hand_have_no_result(state: S) -> None:
    with pytest.raises(ValueError):
        result_from_row(_row(state))
    assert _row(state).needs_publishing is False


def test_needs_publishing_tracks_the_published_state() -> None:
    assert _row(S.ACKNOWLEDGED).needs_publishing
    assert not _row(S.ACKNOWLEDGED, published_state=S.ACKNOWLEDGED).needs_publishing
    assert _row(S.SETTLED, published_state=S.ACKNOWLEDGED).needs_publishing


def test_from_record_converts_numerics_and_states() -> None:
    from decimal import Decimal

    record = {
        **_row(S.UNCERTAIN).__dict__,
        "state": "uncertain",
        "published_state": "uncertain",
        "amount_in": Decimal(5),
        "amount_out": Decimal(2**127),
        "spendable_at_check": Decimal(7),
        "command": {"x": 1},
        "updated_at": T0,
    }
    row = LedgerRow.from_record(record)
    assert row.state is S.UNCERTAIN and row.published_state is S.UNCERTAIN
    assert (row.amount_in, row.amount_out, row.spendable_at_check) == (5, 2**127, 7)
    assert isinstance(row.amount_out, int)
