"""The simulated intents.near: what it refuses (with the contract's verbatim strings), what it
accepts, and what settlement and nonce burning do to its state."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.venues.near_intents.nep413 import (
    SignerKey,
    b64_nonce,
    intents_message,
    sign_intent,
    token_diff_message,
    versioned_nonce,
)
from simulators.verifier import (
    ERR_DEADLINE_EXPIRED,
    ERR_DEADLINE_GT_NONCE,
    ERR_DEADLINE_TOO_SHORT,
    ERR_DIFF_SIGNS,
    ERR_FIXED_AMOUNT_CHANGED,
    ERR_INSUFFICIENT_BALANCE,
    ERR_INVALID_INTENT,
    ERR_INVALID_SALT,
    ERR_INVALID_SIGNATURE,
    ERR_NONCE_USED,
    ERR_QUOTE_ID_MISMATCH,
    ERR_QUOTE_OUTPUT_MISMATCH,
    ERR_TOKENS_MISMATCH,
    ERR_WRONG_CONTRACT,
    CheckedAnswer,
    VerifierError,
    VerifierState,
    fee_ceil,
    gross_up,
    token_fee_pips,
)

UTC = UTC
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
SALT = "252812b3"
TAKER = "taker.near"


@pytest.fixture
def key() -> SignerKey:
    return SignerKey.generate()


@pytest.fixture
def state(key: SignerKey) -> VerifierState:
    s = VerifierState(fee_pips=100, salt_hex=SALT, nonce_cleanup_after_s=None)  # NOW is a fixed past instant
    s.deposit(key.implicit_account_id, EURE, 10**22)
    s.deposit(TAKER, BTC, 10**9)
    return s


def quote_in(amount: int = 100_000) -> dict[str, Any]:
    # The taker sells BTC (asset_in) for EURe (asset_out); the solver receives BTC, gives EURe.
    return {
        "quote_id": "q-1",
        "defuse_asset_identifier_in": BTC,
        "defuse_asset_identifier_out": EURE,
        "exact_amount_in": str(amount),
        "min_deadline_ms": 60_000,
    }


def answer(
    key: SignerKey,
    quote: dict[str, Any],
    amount: int = 60 * 10**18,
    *,
    signer_id: str | None = None,
    diff: dict[str, int] | None = None,
    deadline: datetime | None = None,
    nonce_deadline: datetime | None = None,
    salt: str = SALT,
    nonce: bytes | None = None,
    recipient: str = "intents.near",
    output: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A solver's quote_response params[0], honest unless told otherwise."""
    deadline = deadline or NOW + timedelta(seconds=70)
    exact_in = quote.get("exact_amount_in")
    tin, tout = quote["defuse_asset_identifier_in"], quote["defuse_asset_identifier_out"]
    receive = int(exact_in) if exact_in is not None else amount
    give = amount if exact_in is not None else int(quote["exact_amount_out"])
    diff = diff if diff is not None else {tin: receive, tout: -give}
    nonce = nonce if nonce is not None else versioned_nonce(salt, nonce_deadline or deadline)
    signed = sign_intent(
        key, token_diff_message(signer_id or key.implicit_account_id, deadline, diff), nonce, recipient
    )
    out = (
        output
        if output is not None
        else ({"amount_out": str(amount)} if exact_in is not None else {"amount_in": str(amount)})
    )
    return {"quote_id": quote["quote_id"], "quote_output": out, "signed_data": signed.signed_data}


def refused(fn: Callable[[], Any]) -> str:
    with pytest.raises(VerifierError) as info:
        fn()
    assert str(info.value) == info.value.message
    return info.value.message


# --- acceptance -------------------------------------------------------------------------------------


def test_accepts_a_good_exact_in_answer(state: VerifierState, key: SignerKey) -> None:
    q = quote_in()
    resp = answer(key, q)
    checked = state.check_quote_response(q, resp, NOW)
    assert isinstance(checked, CheckedAnswer)
    assert (checked.quote_id, checked.signer_id, checked.public_key) == ("q-1", key.implicit_account_id, key.public_key)
    assert (checked.amount_in, checked.amount_out) == (100_000, 60 * 10**18)
    assert checked.diff == {BTC: 100_000, EURE: -60 * 10**18}
    assert checked.deadline == (NOW + timedelta(seconds=70)).replace(microsecond=123000)
    assert checked.signed_data == resp["signed_data"]
    assert base64.b64encode(checked.nonce).decode() == resp["signed_data"]["payload"]["nonce"]
    assert not state.is_nonce_used(key.implicit_account_id, b64_nonce(checked.nonce))  # checking is not settling


def test_accepts_a_good_exact_out_answer(state: VerifierState, key: SignerKey) -> None:
    q = {**quote_in(), "exact_amount_out": str(5 * 10**18), "min_deadline_ms": "60000"}
    del q["exact_amount_in"]
    checked = state.check_quote_response(q, answer(key, q, amount=8_000), NOW)
    assert (checked.amount_in, checked.amount_out) == (8_000, 5 * 10**18)


def test_accepts_a_legacy_nonce_and_a_named_account(state: VerifierState, key: SignerKey) -> None:
    state.add_public_key("solver.near", key.public_key)
    state.deposit("solver.near", EURE, 10**20)
    checked = state.check_quote_response(
        quote_in(), answer(key, quote_in(), signer_id="solver.near", nonce=bytes(range(32))), NOW
    )
    assert checked.signer_id == "solver.near"


def test_previous_salt_stays_valid_after_rotation(state: VerifierState, key: SignerKey) -> None:
    new = state.rotate_salt()
    assert new != SALT and state.current_salt() == new and state.is_valid_salt(SALT)
    state.check_quote_response(quote_in(), answer(key, quote_in()), NOW)
    state.invalidate_salts([SALT])
    assert refused(lambda: state.check_quote_response(quote_in(), answer(key, quote_in()), NOW)) == ERR_INVALID_SALT


# --- refusals ---------------------------------------------------------------------------------------


def test_refuses_a_bad_signature(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in())
    resp["signed_data"]["signature"] = answer(key, quote_in())["signed_data"]["signature"]  # another nonce's
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_INVALID_SIGNATURE


def test_refuses_a_signature_by_another_key(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in())
    resp["signed_data"]["public_key"] = SignerKey.generate().public_key
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_INVALID_SIGNATURE


def test_refuses_a_reused_nonce(state: VerifierState, key: SignerKey) -> None:
    nonce = versioned_nonce(SALT, NOW + timedelta(seconds=70))
    first = state.check_quote_response(quote_in(), answer(key, quote_in(), nonce=nonce), NOW)
    state.settle(first, TAKER, NOW)
    again = answer(key, quote_in(), amount=59 * 10**18, nonce=nonce)
    assert refused(lambda: state.check_quote_response(quote_in(), again, NOW)) == ERR_NONCE_USED


def test_refuses_a_wrong_salt(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), salt="00000000")
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_INVALID_SALT


def test_refuses_a_deadline_past_the_nonce_deadline(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), nonce_deadline=NOW + timedelta(seconds=69))
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_DEADLINE_GT_NONCE


def test_refuses_an_expired_deadline(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), deadline=NOW - timedelta(seconds=1))
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_DEADLINE_EXPIRED


def test_refuses_a_short_deadline(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), deadline=NOW + timedelta(seconds=30))
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_DEADLINE_TOO_SHORT


def test_refuses_a_flipped_diff_sign(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), diff={BTC: -100_000, EURE: 60 * 10**18})
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_DIFF_SIGNS


def test_refuses_a_changed_fixed_amount(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), diff={BTC: 100_001, EURE: -60 * 10**18})
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_FIXED_AMOUNT_CHANGED


def test_refuses_quote_output_that_disagrees(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), output={"amount_out": str(61 * 10**18)})
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_QUOTE_OUTPUT_MISMATCH
    resp = answer(key, quote_in(), output={"amount_in": "100000"})
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_QUOTE_OUTPUT_MISMATCH


def test_refuses_other_tokens_and_a_foreign_quote_id(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), diff={BTC: 100_000, "nep141:usdt.near": -5})
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_TOKENS_MISMATCH
    resp = answer(key, quote_in())
    resp["quote_id"] = "q-2"
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_QUOTE_ID_MISMATCH


def test_refuses_a_zero_delta_and_a_wrong_recipient(state: VerifierState, key: SignerKey) -> None:
    deadline = NOW + timedelta(seconds=70)
    msg = intents_message(
        key.implicit_account_id, deadline, [{"intent": "token_diff", "diff": {BTC: "100000", EURE: "0"}}]
    )
    signed = sign_intent(key, msg, versioned_nonce(SALT, deadline))
    resp = {"quote_id": "q-1", "quote_output": {"amount_out": "0"}, "signed_data": signed.signed_data}
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_INVALID_INTENT
    resp = answer(key, quote_in(), recipient="defuse.near")
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_WRONG_CONTRACT


def test_refuses_an_unregistered_key(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), signer_id="solver.near")
    msg = refused(lambda: state.check_quote_response(quote_in(), resp, NOW))
    assert msg == f"public key '{key.public_key}' doesn't exist for account 'solver.near'"
    state.remove_public_key(key.implicit_account_id, key.public_key)  # an implicit account opts out
    msg = refused(lambda: state.check_quote_response(quote_in(), answer(key, quote_in()), NOW))
    assert msg == f"public key '{key.public_key}' doesn't exist for account '{key.implicit_account_id}'"


def test_refuses_insufficient_balance(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in(), amount=10**22 + 1)
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_INSUFFICIENT_BALANCE
    # Exactly the balance is enough: the fee is withheld from the taker, not drawn from the signer.
    state.check_quote_response(quote_in(), answer(key, quote_in(), amount=10**22), NOW)


def test_refuses_malformed_signed_data(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in())
    resp["signed_data"]["payload"]["nonce"] = "%%%"
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)).startswith("JSON: ")


# --- settlement and burning --------------------------------------------------------------------------


def test_settle_moves_balances_with_the_fee_and_consumes_the_nonce(state: VerifierState, key: SignerKey) -> None:
    solver = key.implicit_account_id
    checked = state.check_quote_response(quote_in(), answer(key, quote_in()), NOW)
    s = state.settle(checked, TAKER, NOW + timedelta(seconds=1))
    give, recv = 60 * 10**18, 100_000
    fee_out = fee_ceil(give, 100)
    taker_gives = gross_up(recv, 100)
    fee_in = fee_ceil(taker_gives, 100)
    assert taker_gives - fee_in == recv  # the contract's closure is exact
    assert state.balance(solver, EURE) == 10**22 - give
    assert state.balance(solver, BTC) == recv
    assert state.balance(TAKER, BTC) == 10**9 - taker_gives
    assert state.balance(TAKER, EURE) == give - fee_out
    assert state.balance("intents.near", EURE) == fee_out and state.balance("intents.near", BTC) == fee_in
    assert s.taker_diff == {BTC: -taker_gives, EURE: give - fee_out}
    assert s.fees_collected == {BTC: fee_in, EURE: fee_out}
    assert s.quote_hash == checked.quote_hash and len(s.tx_hash) >= 43 and s.intent_hash != s.tx_hash
    assert state.is_nonce_used(solver, b64_nonce(checked.nonce))
    assert refused(lambda: state.settle(checked, TAKER, NOW)) == ERR_NONCE_USED


def test_settle_rechecks_at_settlement_time(state: VerifierState, key: SignerKey) -> None:
    checked = state.check_quote_response(quote_in(), answer(key, quote_in()), NOW)
    assert refused(lambda: state.settle(checked, TAKER, NOW + timedelta(seconds=71))) == ERR_DEADLINE_EXPIRED
    state.withdraw(key.implicit_account_id, EURE, 10**22 - 1)
    assert refused(lambda: state.settle(checked, TAKER, NOW)) == ERR_INSUFFICIENT_BALANCE
    state.deposit(key.implicit_account_id, EURE, 10**22)
    assert refused(lambda: state.settle(checked, "broke.near", NOW)) == ERR_INSUFFICIENT_BALANCE
    assert not state.is_nonce_used(key.implicit_account_id, b64_nonce(checked.nonce))
    state.settle(checked, TAKER, NOW)


def test_deadline_boundary_and_legacy_nonce_settle(state: VerifierState, key: SignerKey) -> None:
    # `deadline has expired` only once now > deadline; a legacy nonce has no deadline of its own.
    checked = state.check_quote_response(quote_in(), answer(key, quote_in(), nonce=bytes(32)), NOW)
    state.settle(checked, TAKER, checked.deadline)
    checked = state.check_quote_response(quote_in(), answer(key, quote_in(), nonce=bytes([1] * 32)), NOW)
    after = checked.deadline + timedelta(microseconds=1)
    assert refused(lambda: state.settle(checked, TAKER, after)) == ERR_DEADLINE_EXPIRED


def test_burn_makes_a_later_settle_fail(state: VerifierState, key: SignerKey) -> None:
    solver = key.implicit_account_id
    resp = answer(key, quote_in())
    checked = state.check_quote_response(quote_in(), resp, NOW)
    burn = sign_intent(key, intents_message(solver, NOW + timedelta(seconds=60), []), checked.nonce)
    hashes = state.burn_nonces([burn.signed_data], NOW)
    assert hashes == [burn.quote_hash]
    assert refused(lambda: state.settle(checked, TAKER, NOW)) == ERR_NONCE_USED
    assert refused(lambda: state.check_quote_response(quote_in(), resp, NOW)) == ERR_NONCE_USED
    # The relay invalidates in memory only (docs/near-intents-relay.md §7.5): the on-chain view does not see it.
    assert not state.is_nonce_used(solver, b64_nonce(checked.nonce))
    assert state.balance(solver, EURE) == 10**22


def test_burn_on_chain_commits_and_checks_every_payload_first(state: VerifierState, key: SignerKey) -> None:
    solver = key.implicit_account_id
    deadline = NOW + timedelta(seconds=60)
    good = sign_intent(key, intents_message(solver, deadline, []), versioned_nonce(SALT, deadline))
    bad = sign_intent(key, intents_message(solver, deadline, []), versioned_nonce(SALT, deadline)).signed_data
    bad["signature"] = good.signed_data["signature"]
    assert refused(lambda: state.burn_nonces([good.signed_data, bad], NOW)) == ERR_INVALID_SIGNATURE
    nonce_b64 = good.signed_data["payload"]["nonce"]
    assert not state.is_nonce_used(solver, nonce_b64)
    assert state.burn_nonces([good.signed_data], NOW, on_chain=True) == [good.quote_hash]
    assert state.is_nonce_used(solver, nonce_b64)


def test_burn_refuses_payloads_with_intents(state: VerifierState, key: SignerKey) -> None:
    resp = answer(key, quote_in())
    with pytest.raises(VerifierError):
        state.burn_nonces([resp["signed_data"]], NOW)


# --- bookkeeping ---------------------------------------------------------------------------------------


def test_keys_balances_and_fee(key: SignerKey) -> None:
    s = VerifierState(salt_hex="0a0b0c0d")
    assert s.current_salt() == "0a0b0c0d" and s.fee() == 1
    assert s.has_public_key(key.implicit_account_id, key.public_key)
    assert not s.has_public_key("solver.near", key.public_key)
    s.add_public_key("solver.near", key.public_key)
    assert s.public_keys_of("solver.near") == [key.public_key]
    with pytest.raises(VerifierError, match="already exists"):
        s.add_public_key("solver.near", key.public_key)
    s.remove_public_key("solver.near", key.public_key)
    assert s.public_keys_of("solver.near") == []
    with pytest.raises(VerifierError, match="doesn't exist"):
        s.remove_public_key("solver.near", key.public_key)
    s.deposit("a.near", BTC, 5)
    with pytest.raises(VerifierError, match="insufficient balance or overflow"):
        s.withdraw("a.near", BTC, 6)
    s.withdraw("a.near", BTC, 5)
    assert s.balance("a.near", BTC) == 0
    with pytest.raises(VerifierError, match="insufficient balance or overflow"):
        s.deposit("a.near", BTC, 2**128)
    assert len(VerifierState().current_salt()) == 8


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(min_value=1, max_value=2**100), pips=st.integers(min_value=0, max_value=999_999))
def test_fee_closure_is_exact(amount: int, pips: int) -> None:
    # The taker's gross amount, less the fee on it, is exactly what the solver signed to receive.
    gross = gross_up(amount, pips)
    assert gross - fee_ceil(gross, pips) == amount
    assert gross == amount or (gross - 1) - fee_ceil(gross - 1, pips) < amount  # and it is the least such


def test_fee_rates_by_token_kind() -> None:
    assert token_fee_pips("nep141:a.near", 1, 5) == 5
    assert token_fee_pips("nep245:mt.near:x", 2, 5) == 5 and token_fee_pips("nep245:mt.near:x", 1, 5) == 0
    assert token_fee_pips("nep171:nft.near:1", 10, 5) == 0
