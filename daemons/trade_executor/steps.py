"""What the venue's answer to a `quote_response` means for the ledger (pure).

`answer_outcome` maps the relay client's outcome to the ledger state it moves the row to, the
columns written with it, and the error counter it bumps: OK → `acknowledged`; the relay's
refusal → `rejected` with its text verbatim and a reason code; no answer in time (or the
connection lost with the frame out) → `uncertain`, never assumed failed; the frame never
written → `rejected`, not sent. The executor applies it with one ledger step
(`Publisher.step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemons.trade_executor.ledger import LedgerState
from daemons.venues.near_intents.relay_rpc import reason_code
from daemons.venues.near_intents.relay_ws import RelayAnswer, RelayConnectionLost, RelayNotConnected, RelayTimeout

S = LedgerState


@dataclass(frozen=True)
class AnswerOutcome:
    state: LedgerState
    fields: dict[str, Any]  # the ledger columns set with the new state
    counter: str | None  # the executor's error counter this outcome bumps
    salt_invalid: bool = False  # the venue refused the salt: read current_salt again


def answer_outcome(outcome: RelayAnswer | RelayTimeout | RelayNotConnected) -> AnswerOutcome:
    if isinstance(outcome, RelayAnswer):
        venue = {
            "ok": outcome.ok,
            "error": outcome.error,
            "error_code": outcome.error_code,
            "error_data": outcome.error_data,
            "raw": outcome.raw,
        }
        if outcome.ok:
            return AnswerOutcome(S.ACKNOWLEDGED, {"reason": None, "reason_code": None, "venue_response": venue}, None)
        error = outcome.error or ""
        code = reason_code(error)
        return AnswerOutcome(
            S.REJECTED,
            {"reason": error, "reason_code": code, "venue_response": venue},
            f"venue_rejected:{code}",
            salt_invalid="invalid salt" in error,
        )
    if isinstance(outcome, RelayTimeout):
        code = "relay_connection_lost" if isinstance(outcome, RelayConnectionLost) else "relay_timeout"
        reason = (
            f"no answer from the relay ({outcome}); the outcome is unknown: resolved by quote_status or "
            "is_nonce_used, never by resubmitting"
        )
        return AnswerOutcome(
            S.UNCERTAIN, {"reason": reason, "reason_code": code, "venue_response": {"timeout": str(outcome)}}, code
        )
    return AnswerOutcome(
        S.REJECTED,
        {"reason": f"not sent: {outcome}", "reason_code": "not_sent", "venue_response": {"not_sent": str(outcome)}},
        "not_sent",
    )
