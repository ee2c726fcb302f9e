"""Withdrawals: the `ft_withdraw` intent's exact shape, its signature as the simulated verifier
checks it (and executes it: debit, nonce, the POA bridge seeing the burn), and the state machine
from signed to completed or failed, with the deadline resolution and the delay flag."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE, POA_BTC
from daemons.liquidity_manager import withdrawals
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.nep413 import SignerKey, parse_deadline_ns, parse_nonce, verify_signed_data
from simulators.poa_bridge import PoaBridgeSimulator, SimClock
from simulators.verifier import ERR_INSUFFICIENT_BALANCE, ERR_NONCE_USED, VerifierError, VerifierState

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DEST = "0x" + "ab" * 20
BOUND = timedelta(hours=1)
GRACE = timedelta(seconds=30)


def test_the_intent_is_the_documented_poa_withdrawal() -> None:
    intent = withdrawals.ft_withdraw_intent(EURE, 15 * 10**17, DEST, 17_050_000_000_000)
    token = "gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
    assert intent == {
        "intent": "ft_withdraw",
        "token": token,
        "receiver_id": token,
        "amount": str(15 * 10**17),
        "memo": "WITHDRAW_TO:" + DEST,
        "min_gas": "17050000000000",
    }
    assert "msg" not in intent  # a msg would make ft_transfer_call and forbid refunds (docs/poa-bridge.md §8)
    assert "min_gas" not in withdrawals.ft_withdraw_intent(POA_BTC, 1, "bc1qx", None)
    with pytest.raises(ValueError):
        withdrawals.ft_withdraw_intent(EURE, 0, DEST)


def _signed(key: SignerKey, signer: str, amount: int, salt: str, deadline: datetime) -> Withdrawal:
    intent = withdrawals.ft_withdraw_intent(EURE, amount, DEST)
    si = withdrawals.sign_withdrawal(key, signer, intent, salt_hex=salt, deadline=deadline, recipient="intents.near")
    return withdrawals.signed(
        liquidity_action_id="w-1",
        account_id=signer,
        asset=EURE,
        chain="eth:100",
        net_amount=amount - 5 * 10**17,
        fee=5 * 10**17,
        address=DEST,
        now=deadline - timedelta(minutes=5),
        deadline=deadline,
        signed_intent=si,
        wallet_label="gnosis",
        operator="bob",
        note="rebalance",
    )


def test_signed_payload_verifies_and_carries_the_deadline_in_its_nonce() -> None:
    key = SignerKey.generate()
    deadline = datetime.now(UTC).replace(microsecond=123000) + timedelta(minutes=5)
    w = _signed(key, key.implicit_account_id, 2 * 10**18, "0a0b0c0d", deadline)
    assert w.signed_data is not None and w.intent_hash
    verify_signed_data(w.signed_data)
    message = json.loads(w.signed_data["payload"]["message"])
    assert message["signer_id"] == key.implicit_account_id and message["intents"][0]["amount"] == str(2 * 10**18)
    nonce = parse_nonce(base64.b64decode(w.nonce or ""))
    assert nonce.salt_hex == "0a0b0c0d"  # type: ignore[union-attr]
    assert nonce.deadline_ns == parse_deadline_ns(message["deadline"])  # type: ignore[union-attr]
    assert (w.amount, w.net_amount, w.fee, w.status) == (2 * 10**18, 15 * 10**17, 5 * 10**17, "requested")
    event = w.event()
    assert (event.kind, event.status, event.amount, event.net_amount, event.fee, event.intent_hash) == (
        "withdrawal",
        "requested",
        2 * 10**18,
        15 * 10**17,
        5 * 10**17,
        w.intent_hash,
    )


def test_the_simulated_verifier_executes_it_once_and_the_bridge_sees_the_burn() -> None:
    verifier = VerifierState()
    bridge = PoaBridgeSimulator(verifier.deposit, clock=SimClock(frozen=True))
    bridge.watch_burns(verifier, complete_after_s=60)
    key = SignerKey.generate()
    me = key.implicit_account_id
    verifier.deposit(me, EURE.asset_id, 3 * 10**18)
    now = datetime.now(UTC)
    w = _signed(key, me, 2 * 10**18, verifier.current_salt(), now.replace(microsecond=0) + timedelta(minutes=5))
    assert w.signed_data is not None
    [done] = verifier.execute_ft_withdrawals([w.signed_data], now)
    assert done.intent_hash == w.intent_hash and done.amount == 2 * 10**18 and done.memo == "WITHDRAW_TO:" + DEST
    assert verifier.balance(me, EURE.asset_id) == 10**18
    [seen] = bridge.withdrawals
    assert (seen.withdrawal_hash, seen.address, seen.amount, seen.status) == (done.tx_hash, DEST, 2 * 10**18, "PENDING")
    bridge.advance(60)
    assert seen.status == "COMPLETED" and seen.transfer_tx_hash
    with pytest.raises(VerifierError) as again:
        verifier.execute_ft_withdrawals([w.signed_data], now)
    assert again.value.message == ERR_NONCE_USED


def test_the_simulated_verifier_refuses_more_than_the_balance_and_moves_nothing() -> None:
    verifier = VerifierState()
    key = SignerKey.generate()
    me = key.implicit_account_id
    verifier.deposit(me, EURE.asset_id, 10**18)
    now = datetime.now(UTC)
    w = _signed(key, me, 2 * 10**18, verifier.current_salt(), now.replace(microsecond=0) + timedelta(minutes=5))
    assert w.signed_data is not None and w.nonce is not None
    with pytest.raises(VerifierError) as refused:
        verifier.execute_ft_withdrawals([w.signed_data], now)
    assert refused.value.message == ERR_INSUFFICIENT_BALANCE
    assert verifier.balance(me, EURE.asset_id) == 10**18 and not verifier.is_nonce_used(me, w.nonce)


def _fresh() -> Withdrawal:
    key = SignerKey.generate()
    return _signed(key, key.implicit_account_id, 2 * 10**18, "01020304", T0 + timedelta(minutes=5))


def test_happy_path_requested_issued_pending_completed() -> None:
    w = _fresh()
    issued = withdrawals.published(w, T0)
    assert issued is not None and issued.status == "issued"
    assert withdrawals.published(issued, T0) is None
    assert withdrawals.on_intent_status(issued, "PENDING", T0) is None
    assert withdrawals.on_intent_status(issued, "TX_BROADCASTED", T0, tx_hash="h") is None
    assert withdrawals.on_intent_status(issued, "NOT_FOUND_OR_NOT_VALID", T0) is None  # may be transient
    burned = withdrawals.on_intent_status(issued, "SETTLED", T0, tx_hash="near-tx")
    assert burned is not None and (burned.status, burned.tx_hash) == ("pending", "near-tx")
    assert withdrawals.on_bridge_status(burned, None, T0) is None  # "Withdrawals not found"
    assert withdrawals.on_bridge_status(burned, "PENDING", T0) is None
    assert withdrawals.on_bridge_status(burned, "AWAITING", T0) is None
    done = withdrawals.on_bridge_status(burned, "COMPLETED", T0, transfer_tx_hash="0xfeed")
    assert done is not None and (done.status, done.transfer_tx_hash, done.open) == ("completed", "0xfeed", False)
    assert done.event().transfer_tx_hash == "0xfeed"


def test_an_already_processed_publish_is_success() -> None:
    issued = withdrawals.published(_fresh(), T0, already_processed=True)
    assert issued is not None and issued.status == "issued" and "already" in (issued.reason or "")


@pytest.mark.parametrize("status", ["FAILED", "REJECTED", "RETURNED"])
def test_bridge_failures_end_it(status: str) -> None:
    burned = withdrawals.on_intent_status(_fresh(), "SETTLED", T0, tx_hash="t")
    assert burned is not None
    failed = withdrawals.on_bridge_status(burned, status, T0)
    assert failed is not None and failed.status == "failed" and status in (failed.reason or "")


def test_relay_refusal_and_relay_failure() -> None:
    refused = withdrawals.publish_refused(_fresh(), "insufficient balance or overflow", T0)
    assert refused is not None and refused.status == "failed"
    assert refused.reason == "relay refused: insufficient balance or overflow"
    issued = withdrawals.published(_fresh(), T0)
    assert issued is not None
    failed = withdrawals.on_intent_status(issued, "NOT_FOUND_OR_NOT_VALID", T0, status_details="FAILED")
    assert failed is not None and failed.status == "failed"


def test_a_signed_withdrawal_never_sent_can_be_withheld_but_not_once_published() -> None:
    w = _fresh()
    held = withdrawals.withheld(w, "withdrawals were frozen", T0)
    assert held is not None and held.status == "failed" and held.reason == "not sent: withdrawals were frozen"
    issued = withdrawals.published(w, T0)
    assert issued is not None and withdrawals.withheld(issued, "late", T0) is None


def test_past_the_deadline_the_nonce_decides() -> None:
    w = _fresh()
    assert not withdrawals.past_deadline(w, w.deadline + GRACE, GRACE)
    assert withdrawals.past_deadline(w, w.deadline + GRACE + timedelta(seconds=1), GRACE)
    expired = withdrawals.on_expired(w, nonce_used=False, now=T0)
    assert expired is not None and expired.status == "failed" and "never used" in (expired.reason or "")
    assert withdrawals.on_expired(w, nonce_used=True, now=T0) is None
    recent = [
        ("other", w.asset_id, w.amount, DEST),
        ("mine", w.asset_id, w.amount, DEST.upper().replace("0X", "0x")),
        ("small", w.asset_id, w.amount - 1, DEST),
    ]
    assert withdrawals.match_recent_burn(w, recent, known_tx_hashes={"other"}) == "mine"
    assert withdrawals.match_recent_burn(w, recent[2:], set()) is None
    burned = withdrawals.on_nonce_used(w, "mine", T0)
    assert burned is not None and (burned.status, burned.tx_hash) == ("pending", "mine")


def test_late_is_flagged_once_and_stages_go_on() -> None:
    w = _fresh()
    assert withdrawals.check_delay(w, w.requested_at + BOUND - timedelta(seconds=1), BOUND) is None
    late = withdrawals.check_delay(w, w.requested_at + BOUND, BOUND)
    assert late is not None and late.status == "delayed" and "stage signed" in (late.reason or "")
    assert withdrawals.check_delay(late, w.requested_at + 2 * BOUND, BOUND) is None
    issued = withdrawals.published(late, T0)
    assert issued is not None and issued.status == "delayed" and issued.stage == "published"
    burned = withdrawals.on_intent_status(issued, "SETTLED", T0, tx_hash="t")
    assert burned is not None
    done = withdrawals.on_bridge_status(burned, "COMPLETED", T0)
    assert done is not None and done.status == "completed"
    assert withdrawals.check_delay(done, w.requested_at + 9 * BOUND, BOUND) is None
    assert withdrawals.pending_by_asset([w, done]) == {w.asset_id: w.amount}


_ORDER = {"signed": 0, "published": 1, "burned": 2, "completed": 3, "failed": 3}
_moves = st.sampled_from(
    [
        ("published", None),
        ("refused", None),
        ("relay", "SETTLED"),
        ("relay", "PENDING"),
        ("relay", "NOT_FOUND_OR_NOT_VALID"),
        ("relay_failed", None),
        ("expired", False),
        ("expired", True),
        ("bridge", "COMPLETED"),
        ("bridge", "PENDING"),
        ("bridge", "FAILED"),
        ("bridge", None),
        ("delay", None),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_moves, max_size=14))
def test_no_sequence_of_answers_goes_backwards(moves: list[tuple[str, object]]) -> None:
    w = _fresh()
    now = T0
    for move, arg in moves:
        now += timedelta(minutes=20)
        if move == "published":
            new = withdrawals.published(w, now)
        elif move == "refused":
            new = withdrawals.publish_refused(w, "no", now)
        elif move == "relay":
            new = withdrawals.on_intent_status(w, str(arg), now, tx_hash="t")
        elif move == "relay_failed":
            new = withdrawals.on_intent_status(w, "NOT_FOUND_OR_NOT_VALID", now, status_details="FAILED")
        elif move == "expired":
            new = withdrawals.on_expired(w, bool(arg), now)
        elif move == "bridge":
            new = withdrawals.on_bridge_status(w, arg if arg is None else str(arg), now)
        else:
            new = withdrawals.check_delay(w, now, BOUND)
        if new is None:
            continue
        assert w.open, "a finished withdrawal changed"
        assert _ORDER[new.stage] >= _ORDER[w.stage]
        assert new.amount == w.amount and new.intent_hash == w.intent_hash and new.nonce == w.nonce
        if new.stage == "completed":
            assert w.stage == "burned"  # only after the burn settled
        w = new
