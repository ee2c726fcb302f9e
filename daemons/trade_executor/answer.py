"""Building a quote answer: the `token_diff`, the versioned nonce and deadline, the signed NEP-413
`quote_response` payload, the empty-intent payload that burns a live answer's nonce, and the
salt cache. Pure: time, randomness and the key come in as arguments.

Wire facts (§4 of `docs/near-intents-relay.md` (§n below); docs/verifier.md §3): the solver's diff is positive on the
asset it receives (the request's `defuse_asset_identifier_in`) and negative on the one it gives;
the request's fixed amount is echoed unchanged and `quote_output` names the other side. Each
answer gets its own versioned nonce carrying the verifier's current salt and a deadline in ns at
millisecond precision, equal to the intent deadline: now + `min_deadline_ms` + a margin.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemons.core.events import ExecuteTrade
from daemons.venues.near_intents.nep413 import (
    SignedIntent,
    SignerKey,
    b64_nonce,
    datetime_to_ns,
    intents_message,
    ns_to_datetime,
    sign_intent,
    token_diff_message,
    versioned_nonce,
)

_NS_PER_MS = 1_000_000


def ceil_ms(dt: datetime) -> datetime:
    ns = datetime_to_ns(dt)
    return ns_to_datetime(-(-ns // _NS_PER_MS) * _NS_PER_MS)


def answer_deadline(now: datetime, min_deadline_ms: int, margin_ms: int) -> datetime:
    """now + min_deadline_ms + margin at millisecond precision (the intent and nonce deadline),
    rounded up: never shorter than asked, and already exact for the ms-truncating encoders."""
    if min_deadline_ms < 0 or margin_ms < 0:
        raise ValueError("min_deadline_ms and margin_ms must not be negative")
    return ceil_ms(now + timedelta(milliseconds=min_deadline_ms + margin_ms))


def token_diff(cmd: ExecuteTrade) -> dict[str, int]:
    """+ what quoteloop receives (`asset_in`), − what it gives (`asset_out`)."""
    if cmd.asset_in == cmd.asset_out:
        raise ValueError("asset_in and asset_out must differ")
    if cmd.amount_in <= 0 or cmd.amount_out <= 0:
        raise ValueError("both amounts must be positive (a zero delta is an invalid intent)")
    return {cmd.asset_in: cmd.amount_in, cmd.asset_out: -cmd.amount_out}


def quote_output(cmd: ExecuteTrade) -> dict[str, int]:
    """The side the request left open: `amount_out` for exact-in requests, `amount_in` for
    exact-out ones (§4); the fixed side travels unchanged inside the signed diff."""
    if cmd.fixed_side == "exact_amount_in":
        return {"amount_out": cmd.amount_out}
    return {"amount_in": cmd.amount_in}


@dataclass(frozen=True)
class NoncePlan:
    """Chosen before signing and written to the ledger first (`signing`)."""

    salt: str
    deadline: datetime  # millisecond precision
    nonce: bytes

    @property
    def nonce_b64(self) -> str:
        return b64_nonce(self.nonce)


def plan_nonce(
    salt: str,
    now: datetime,
    min_deadline_ms: int,
    margin_ms: int,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> NoncePlan:
    deadline = answer_deadline(now, min_deadline_ms, margin_ms)
    return NoncePlan(salt=salt, deadline=deadline, nonce=versioned_nonce(salt, deadline, random_bytes))


@dataclass(frozen=True)
class SignedAnswer:
    signed_data: dict[str, Any]
    quote_hash: str
    quote_output: dict[str, int]
    message: str

    def quote_output_wire(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.quote_output.items()}


def sign_answer(key: SignerKey, signer_id: str, cmd: ExecuteTrade, plan: NoncePlan, recipient: str) -> SignedAnswer:
    """The NEP-413 `token_diff` answer to `cmd`, signed; its quote_hash is known before sending."""
    message = token_diff_message(signer_id, plan.deadline, token_diff(cmd))
    signed: SignedIntent = sign_intent(key, message, plan.nonce, recipient)
    return SignedAnswer(
        signed_data=signed.signed_data, quote_hash=signed.quote_hash, quote_output=quote_output(cmd), message=message
    )


def cancel_payload(key: SignerKey, signer_id: str, nonce: bytes, deadline: datetime, recipient: str) -> SignedIntent:
    """An empty-intent payload with a live answer's own nonce: publishing it burns the nonce, so
    the answer can no longer settle (§7.5 "Cancelling"). Its deadline is the answer's, which is
    what the nonce allows (an intent deadline must not pass the nonce's)."""
    return sign_intent(key, intents_message(signer_id, deadline, []), nonce, recipient)


class SaltCache:
    """The verifier's `current_salt`, trusted for at most `max_age_s` and dropped at once when the
    relay answers `invalid salt`. The clock is passed in."""

    def __init__(self, max_age_s: float) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = max_age_s
        self.salt: str | None = None
        self.fetched_at: datetime | None = None
        self.invalidations = 0

    def get(self, now: datetime) -> str | None:
        if self.salt is None or self.fetched_at is None:
            return None
        if (now - self.fetched_at).total_seconds() >= self.max_age_s or now < self.fetched_at:
            return None
        return self.salt

    def put(self, salt: str, now: datetime) -> None:
        self.salt = salt
        self.fetched_at = now

    def invalidate(self) -> None:
        self.salt = None
        self.fetched_at = None
        self.invalidations += 1

    def age_s(self, now: datetime) -> float | None:
        return None if self.fetched_at is None else (now - self.fetched_at).total_seconds()

    def wants_refresh(self, now: datetime) -> bool:
        """Refresh in the background at half its life, so the hot path rarely waits for it."""
        age = self.age_s(now)
        return age is None or age >= self.max_age_s / 2
