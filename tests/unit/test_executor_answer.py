"""Building answers: token_diff, quote_output, the versioned nonce and deadline, the signature,
the nonce-burning cancel payload and the salt cache — checked against the simulated verifier,
which applies the real contract's rules."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.events import ExecuteTrade
from daemons.trade_executor.answer import (
    SaltCache,
    answer_deadline,
    cancel_payload,
    plan_nonce,
    quote_output,
    sign_answer,
    token_diff,
)
from daemons.venues.near_intents.nep413 import (
    SignerKey,
    VersionedNonce,
    datetime_to_ns,
    floor_ms,
    parse_deadline_ns,
    parse_nonce,
    quote_hash,
    verify_signed_data,
)
from simulators.verifier import ERR_NONCE_USED, VerifierError, VerifierState

BTC = "nep141:nbtc.bridge.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
ACCOUNT = "solver.near"
NOW = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
KEY = SignerKey.generate()


def command(
    *,
    fixed_side: str = "exact_amount_in",
    amount_in: int = 100_000,
    amount_out: int = 89 * 10**18,
    direction: str = "BUY_BTC",
    min_deadline_ms: int = 60_000,
) -> ExecuteTrade:
    asset_in, asset_out = (BTC, EURE) if direction == "BUY_BTC" else (EURE, BTC)
    return ExecuteTrade(
        command_id=str(uuid.uuid4()),
        decision_id="d",
        quote_id=str(uuid.uuid4()),
        direction=direction,
        asset_in=asset_in,
        asset_out=asset_out,  # type: ignore[arg-type]
        amount_in=amount_in,
        amount_out=amount_out,
        fixed_side=fixed_side,  # type: ignore[arg-type]
        min_deadline_ms=min_deadline_ms,
        answer_by=NOW + timedelta(seconds=1),
    )


def request_for(cmd: ExecuteTrade) -> dict[str, object]:
    """The relay's quote request the command answers."""
    fixed = (
        {"exact_amount_in": str(cmd.amount_in)}
        if cmd.fixed_side == "exact_amount_in"
        else {"exact_amount_out": str(cmd.amount_out)}
    )
    return {
        "quote_id": cmd.quote_id,
        "defuse_asset_identifier_in": cmd.asset_in,
        "defuse_asset_identifier_out": cmd.asset_out,
        "min_deadline_ms": cmd.min_deadline_ms,
        **fixed,
    }


def verifier() -> VerifierState:
    v = VerifierState(salt_hex="252812b3")
    v.add_public_key(ACCOUNT, KEY.public_key)
    v.deposit(ACCOUNT, EURE, 10**24)
    v.deposit(ACCOUNT, BTC, 10**12)
    return v


def test_token_diff_receives_in_gives_out_and_echoes_the_fixed_side() -> None:
    buy = command()
    assert token_diff(buy) == {BTC: 100_000, EURE: -(89 * 10**18)}
    assert quote_output(buy) == {"amount_out": 89 * 10**18}
    sell = command(direction="SELL_BTC", fixed_side="exact_amount_out", amount_in=95 * 10**18, amount_out=100_000)
    assert token_diff(sell) == {EURE: 95 * 10**18, BTC: -100_000}
    assert quote_output(sell) == {"amount_in": 95 * 10**18}


def test_a_zero_amount_is_refused_before_signing() -> None:
    with pytest.raises(ValueError):
        token_diff(command(amount_out=0))


def test_deadline_is_now_plus_min_deadline_plus_margin_at_millisecond_precision() -> None:
    d = answer_deadline(NOW, 60_000, 5_000)
    assert d == datetime(2026, 11, 24, 12, 1, 5, 124000, tzinfo=UTC)  # rounded up: never shorter
    assert floor_ms(d) == d and datetime_to_ns(d) % 1_000_000 == 0
    exact = datetime(2026, 11, 24, 12, 0, 0, 5000, tzinfo=UTC)
    assert answer_deadline(exact, 1, 0) == exact + timedelta(milliseconds=1)
    with pytest.raises(ValueError):
        answer_deadline(NOW, -1, 0)


def test_the_nonce_carries_salt_and_the_intent_deadline_and_the_signature_verifies() -> None:
    cmd = command()
    plan = plan_nonce("252812b3", NOW, cmd.min_deadline_ms, 5_000)
    answer = sign_answer(KEY, ACCOUNT, cmd, plan, "intents.near")
    parsed = parse_nonce(base64.b64decode(answer.signed_data["payload"]["nonce"]))
    assert isinstance(parsed, VersionedNonce) and parsed.salt_hex == "252812b3"
    message = json.loads(answer.signed_data["payload"]["message"])
    assert parse_deadline_ns(message["deadline"]) == parsed.deadline_ns == datetime_to_ns(plan.deadline)
    assert message["signer_id"] == ACCOUNT and message["intents"] == [
        {"intent": "token_diff", "diff": {BTC: "100000", EURE: "-89000000000000000000"}}
    ]
    digest = verify_signed_data(answer.signed_data)
    assert answer.quote_hash == quote_hash(digest)
    assert answer.quote_output_wire() == {"amount_out": "89000000000000000000"}
    assert plan.nonce_b64 == answer.signed_data["payload"]["nonce"]


def test_every_answer_gets_its_own_nonce() -> None:
    nonces = {plan_nonce("252812b3", NOW, 60_000, 0).nonce for _ in range(200)}
    assert len(nonces) == 200


@settings(max_examples=60, deadline=None)
@given(
    fixed_side=st.sampled_from(["exact_amount_in", "exact_amount_out"]),
    direction=st.sampled_from(["BUY_BTC", "SELL_BTC"]),
    amount_in=st.integers(1, 10**21),
    amount_out=st.integers(1, 10**11),
    min_deadline_ms=st.integers(0, 120_000),
    margin_ms=st.integers(0, 10_000),
)
def test_the_simulated_verifier_accepts_every_answer_built(
    fixed_side: str, direction: str, amount_in: int, amount_out: int, min_deadline_ms: int, margin_ms: int
) -> None:
    cmd = command(
        fixed_side=fixed_side,
        direction=direction,
        amount_in=amount_in,
        amount_out=amount_out,
        min_deadline_ms=min_deadline_ms,
    )
    v = verifier()
    plan = plan_nonce(v.current_salt(), NOW, min_deadline_ms, margin_ms)
    answer = sign_answer(KEY, ACCOUNT, cmd, plan, "intents.near")
    response = {"quote_id": cmd.quote_id, "quote_output": answer.quote_output_wire(), "signed_data": answer.signed_data}
    checked = v.check_quote_response(request_for(cmd), response, NOW)
    assert (checked.amount_in, checked.amount_out, checked.quote_hash) == (amount_in, amount_out, answer.quote_hash)


def test_the_cancel_payload_burns_the_answers_nonce() -> None:
    cmd = command()
    v = verifier()
    plan = plan_nonce(v.current_salt(), NOW, cmd.min_deadline_ms, 1_000)
    answer = sign_answer(KEY, ACCOUNT, cmd, plan, "intents.near")
    burn = cancel_payload(KEY, ACCOUNT, plan.nonce, plan.deadline, "intents.near")
    assert json.loads(burn.signed_data["payload"]["message"])["intents"] == []
    assert burn.signed_data["payload"]["nonce"] == plan.nonce_b64
    v.burn_nonces([burn.signed_data], NOW)
    response = {"quote_id": cmd.quote_id, "quote_output": answer.quote_output_wire(), "signed_data": answer.signed_data}
    with pytest.raises(VerifierError) as err:
        v.check_quote_response(request_for(cmd), response, NOW)
    assert err.value.message == ERR_NONCE_USED


def test_salt_cache_is_trusted_for_its_max_age_and_dropped_on_invalidation() -> None:
    cache = SaltCache(300)
    assert cache.get(NOW) is None and cache.wants_refresh(NOW)
    cache.put("252812b3", NOW)
    assert cache.get(NOW + timedelta(seconds=299)) == "252812b3"
    assert not cache.wants_refresh(NOW + timedelta(seconds=149)) and cache.wants_refresh(NOW + timedelta(seconds=150))
    assert cache.get(NOW + timedelta(seconds=300)) is None  # never older than 5 minutes
    assert cache.get(NOW - timedelta(seconds=1)) is None  # a clock that went back is not trusted
    cache.invalidate()
    assert cache.get(NOW) is None and cache.invalidations == 1
    with pytest.raises(ValueError):
        SaltCache(0)
