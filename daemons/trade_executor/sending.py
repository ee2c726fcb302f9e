"""Sending a stored answer: the last check with no await between it and the frame's write, the
`quote_response`, and the venue's answer applied to the ledger (`steps.answer_outcome`, pure).

A stored answer that must not leave any more (disarmed, late, inputs gone stale, a ceiling
reached) is `rejected` without being sent and keeps its hold until its deadline: its signature
is valid until then. Nothing is ever resent: an answer whose outcome is unknown is `uncertain` and
resolved from the venue like any live answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from daemons.core.db import DB_ERRORS
from daemons.core.events import ExecuteTrade, now_utc
from daemons.core.failpoints import failpoint
from daemons.trade_executor.answer import SignedAnswer
from daemons.trade_executor.gates import Refusal, SendInputs, send_refusal
from daemons.trade_executor.ledger import LedgerRow, LedgerState
from daemons.trade_executor.steps import answer_outcome
from daemons.venues.near_intents.relay_ws import RelayAnswer, RelayNotConnected, RelayTimeout

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class Sending:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def send(self, stored: tuple[LedgerRow, SignedAnswer], cmd: ExecuteTrade) -> None:
        submitted, answer = stored
        cid = cmd.command_id
        try:
            assert self.ex.relay is not None and submitted.deadline is not None
            failpoint("trade-executor.after_submitted")  # signed and durable, not yet sent
            self.ex.book.update(cid, state=S.SUBMITTED, quote_hash=answer.quote_hash)
            sent_at = now_utc()
            # the last check, with no await between it and the frame's write: once /disarm has
            # answered nothing leaves, nor anything late, on inputs gone stale, or over a ceiling
            withheld = send_refusal(
                cmd,
                self.ex.pair,
                self.ex.ceilings,
                SendInputs(
                    now=sent_at,
                    armed=self.ex.arm.armed,
                    price=self.ex.prices.latest,
                    inventory=self.ex.inventory.latest,
                    inventory_max_age_ms=self.ex.cfg.executor_inventory_max_age_ms,
                    live_exposure=self.ex.book.live_exposure(cmd.asset_out),
                ),
            )
            if withheld is not None:
                await self._withhold(submitted, withheld)
                return
            self.ex.last_request = {
                "command_id": cid,
                "quote_id": cmd.quote_id,
                "quote_hash": answer.quote_hash,
                "deadline": submitted.deadline,
                "sent_at": sent_at,
            }
            self.ex.log.info(
                "answer_submitted",
                command_id=cid,
                quote_id=cmd.quote_id,
                quote_hash=answer.quote_hash,
                deadline=submitted.deadline.isoformat(),
            )
            outcome: RelayAnswer | RelayTimeout | RelayNotConnected
            try:
                outcome = await self.ex.relay.send_quote_response(
                    cmd.quote_id,
                    answer.quote_output,
                    answer.signed_data,
                    timeout_s=self.ex.cfg.executor_relay_answer_timeout_s,
                )
            except (RelayTimeout, RelayNotConnected) as exc:
                outcome = exc
            await self._apply_answer(submitted, outcome, sent_at, now_utc())
        except DB_ERRORS as exc:
            # the row stays where it is; recovery resolves it once PostgreSQL is back
            self.ex.db_lost(exc)
        except Exception:
            # stored as submitted: never resent, resolved from the venue like any live answer
            self.ex.errors["internal_error"] += 1
            self.ex.log.exception("answer_failed", command_id=cid, quote_id=cmd.quote_id)
        finally:
            self.ex.busy.release(cid)

    async def _withhold(self, row: LedgerRow, refusal: Refusal) -> None:
        """A stored answer that must not leave any more: rejected without being sent. Its hold
        stays until its deadline passes (its signature is valid until then)."""

        def noted(_moved: LedgerRow) -> None:
            self.ex.errors["not_sent"] += 1
            self.ex.refusals[refusal.code] += 1
            self.ex.log.warning(
                "answer_withheld",
                command_id=row.command_id,
                quote_id=row.quote_id,
                reason_code=refusal.code,
                deadline=row.deadline,
            )
            self.ex.completed += 1

        self.ex.book.withhold(row.command_id)  # before the await: no other command sees it released
        # None: resolved by another path meanwhile, it keeps its own result
        await self.ex.publisher.step(
            row.command_id,
            S.REJECTED,
            now_utc(),
            noted=noted,
            reason=refusal.reason,
            reason_code=refusal.code,
            venue_response={"not_sent": refusal.reason},
        )

    async def _apply_answer(
        self,
        row: LedgerRow,
        outcome: RelayAnswer | RelayTimeout | RelayNotConnected,
        sent_at: datetime,
        answered_at: datetime,
    ) -> None:
        cid = row.command_id
        store = self.ex.ledger()
        result = answer_outcome(outcome)
        target = result.state
        if result.counter is not None:
            self.ex.errors[result.counter] += 1
        if result.salt_invalid:
            self.ex.salt.invalidate()  # the next answer reads current_salt again
        if isinstance(outcome, RelayAnswer):
            self.ex.last_venue_response = {
                "command_id": cid,
                "quote_id": row.quote_id,
                "ok": outcome.ok,
                "error": outcome.error,
                "at": answered_at,
            }
            if not outcome.ok:
                self.ex.log.warning(
                    "venue_rejected",
                    command_id=cid,
                    quote_id=row.quote_id,
                    venue="near_intents",
                    reason=result.fields["reason"],
                    reason_code=result.fields["reason_code"],
                )
        elif isinstance(outcome, RelayTimeout):
            self.ex.log.warning(
                "venue_timeout", command_id=cid, quote_id=row.quote_id, venue="near_intents", error=str(outcome)
            )
        fields = result.fields
        answered = isinstance(outcome, RelayAnswer)

        def noted(_moved: LedgerRow) -> None:
            if target is S.ACKNOWLEDGED:
                self.ex.log.info(
                    "answer_acknowledged", command_id=cid, quote_id=row.quote_id, quote_hash=row.quote_hash
                )
            self.ex.completed += 1

        moved = await self.ex.publisher.step(
            cid,
            target,
            answered_at,
            noted=noted,
            sent_at=None if isinstance(outcome, RelayNotConnected) else sent_at,
            venue_answered_at=answered_at if answered else None,
            **fields,
        )
        if moved is None:
            # a quote_status settled it first: keep the venue's answer beside the settlement
            await store.merge_venue_response(cid, "answer", fields.get("venue_response"))
