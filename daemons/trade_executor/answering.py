"""Answering a command: its ledger `received` row, the gates, the hold, the signature, the
frame and the venue's answer — the executor's hot path (`TradeExecutor` runs it per command).

Order, and why: every check and the hold run with no await between them, so commands accepted
concurrently cannot over-commit; the command's first row is written once, straight in its state
(`refused`, or `submitted` with nonce, deadline and signature: signing is local and may come
first), so an answer costs one durable write before its frame, and a second delivery finds the
row and republishes its result; the last check (`send_refusal`) runs with no await between it
and the frame's write. The command loop commits a command's offset only once its row is durable.
The venue's answer is mapped to the ledger by `steps.answer_outcome` (pure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from daemons.core.db import DB_ERRORS
from daemons.core.events import Envelope, ExecuteTrade, RefusalCode, TradeResult, now_utc
from daemons.core.failpoints import failpoint
from daemons.trade_executor.answer import SignedAnswer, plan_nonce, sign_answer
from daemons.trade_executor.gates import (
    InventoryCheck,
    Refusal,
    SendInputs,
    check_ceilings,
    check_inventory,
    check_price,
    command_refusal,
    send_refusal,
)
from daemons.trade_executor.ledger import (
    RESULT_STATUS,
    LedgerRow,
    LedgerState,
    execution_id_for,
)
from daemons.trade_executor.settlement import (
    LiveAnswer,
)
from daemons.trade_executor.steps import answer_outcome
from daemons.venues.near_intents.near_rpc import (
    NearRpcError,
)
from daemons.venues.near_intents.relay_ws import (
    RelayAnswer,
    RelayNotConnected,
    RelayTimeout,
)

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class Answering:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def take(self, event: Envelope[ExecuteTrade]) -> None:
        """Returns once the command's first ledger row is durable (`submitted` with its signature,
        or `refused`), or it is found a duplicate: the command loop commits its offset after
        that. The frame and the venue's answer follow in a task."""
        cmd = event.payload
        cid = cmd.command_id
        now = now_utc()
        self.ex.last_command = {
            "command_id": cid,
            "quote_id": cmd.quote_id,
            "decision_id": cmd.decision_id,
            "received_at": now,
            "answer_by": cmd.answer_by,
        }
        if cid in self.ex.busy:
            # delivered again while the first delivery is in hand: its result comes from that one
            self.ex.errors["duplicate_commands"] += 1
            self.ex.log.info("duplicate_command", command_id=cid, quote_id=cmd.quote_id, state="in hand")
            return
        if cid in self.ex.book.answers or cmd.quote_id in self.ex.book.by_quote:
            await self._duplicate(event, now)  # its row (or the quote's) is stored: republish, refuse
            return
        refusal = (
            command_refusal(cmd, self.ex.pair, self.ex.gate_inputs(now))
            or check_ceilings(cmd, self.ex.pair, self.ex.ceilings, self.ex.book.live_exposure(cmd.asset_out))
            or check_price(cmd, self.ex.pair, self.ex.prices.latest, now, self.ex.ceilings)
        )
        if refusal is not None:
            await self.refuse_new(event, refusal, now)
            return
        check = check_inventory(
            self.ex.inventory.latest,
            cmd.asset_out,
            cmd.amount_out,
            self.ex.book.reserved(cmd.asset_out),
            now,
            self.ex.cfg.executor_inventory_max_age_ms,
            self.ex.signer.account_id,
        )
        if check.refusal is not None:
            await self.refuse_new(event, check.refusal, now)
            return
        # reserve now, with no await since the check: the next command already sees this hold
        self.ex.book.hold(
            LiveAnswer(
                command_id=cid,
                quote_id=cmd.quote_id,
                asset_out=cmd.asset_out,
                amount_out=cmd.amount_out,
                state=S.RECEIVED,
            )
        )
        self.ex.busy.take(cid)
        try:
            stored = await self._sign_and_store(event, check, now)
        except BaseException:
            self.ex.book.release(cid)  # nothing durable, nothing sent: the command is read again
            self.ex.busy.release(cid)
            raise
        if stored is None:
            self.ex.busy.release(cid)
            return
        task = asyncio.create_task(self._send(stored, cmd), name=f"answer-{cid}")
        self.ex.tasks.add(task)
        task.add_done_callback(self.ex.tasks.discard)

    async def _sign_and_store(
        self, event: Envelope[ExecuteTrade], check: InventoryCheck, received_at: datetime
    ) -> tuple[LedgerRow, SignedAnswer] | None:
        """Salt, the command's checks once more (after that await), the nonce and the NEP-413
        signature, then the one durable write before the frame: the row straight in `submitted`
        with nonce, deadline and signature. None: refused late, or a duplicate (handled)."""
        cmd = event.payload
        cid = cmd.command_id
        try:
            salt = await self.ex.chain.current_salt()
            now = now_utc()
            late = command_refusal(cmd, self.ex.pair, self.ex.gate_inputs(now))  # again, after the await
            if isinstance(salt, NearRpcError) and late is None:
                late = Refusal(RefusalCode.SALT_UNAVAILABLE, f"current_salt could not be read: {salt.message}")
            if late is not None:
                await self.refuse_new(event, late, now)
                return None
            assert isinstance(salt, str) and self.ex.key is not None
            signer_id = self.ex.signer.account_id or ""
            plan = plan_nonce(
                salt, now, cmd.min_deadline_ms, self.ex.cfg.executor_answer_margin_ms, self.ex.random_bytes
            )
            self.ex.book.update(cid, state=S.SIGNING, signer_id=signer_id, nonce=plan.nonce_b64, deadline=plan.deadline)
            answer = sign_answer(self.ex.key, signer_id, cmd, plan, self.ex.cfg.verifier_contract)
        except DB_ERRORS:
            raise
        except Exception:
            self.ex.errors["internal_error"] += 1
            self.ex.log.exception("answer_failed", command_id=cid, quote_id=cmd.quote_id)
            await self.refuse_new(
                event, Refusal(RefusalCode.INTERNAL_ERROR, "the executor failed before signing"), now_utc()
            )
            return None
        signed_at = now_utc()
        submitted = await self.ex.ledger().insert(
            event,
            received_at,
            S.SUBMITTED,
            signed_at,
            signer_id=signer_id,
            salt=plan.salt,
            nonce=plan.nonce_b64,
            deadline=plan.deadline,
            inventory_id=check.inventory_id,
            spendable_at_check=check.spendable,
            reserved_at_check=check.reserved,
            signed_data=answer.signed_data,
            quote_hash=answer.quote_hash,
            quote_output=answer.quote_output_wire(),
            signed_at=signed_at,
        )
        if submitted is None:
            self.ex.book.release(cid)  # signed, never stored nor sent: the stored row stands
            await self._duplicate(event, received_at)
            return None
        return submitted, answer

    async def _duplicate(self, event: Envelope[ExecuteTrade], now: datetime) -> None:
        cmd = event.payload
        store = self.ex.ledger()
        existing = await store.get(cmd.command_id)
        if existing is not None:
            self.ex.errors["duplicate_commands"] += 1
            self.ex.log.info(
                "duplicate_command", command_id=cmd.command_id, quote_id=cmd.quote_id, state=existing.state.value
            )
            if RESULT_STATUS[existing.state] is None:
                return  # in hand (or left for recovery): its result is on the way
            await self.ex.publisher.publish(existing, republish=True)
            return
        other = await store.get_by_quote(cmd.quote_id)
        holder = f"command {other.command_id} ({other.state.value})" if other is not None else "another command"
        # Not stored (the quote's row belongs to the other command), but deterministic: a
        # redelivery gets the same refusal with the same execution_id.
        self.ex.errors["duplicate_quotes"] += 1
        self.ex.refusals["quote_already_answered"] += 1
        result = TradeResult(
            execution_id=execution_id_for(cmd.command_id),
            command_id=cmd.command_id,
            quote_id=cmd.quote_id,
            decision_id=cmd.decision_id,
            status="refused",
            reason_code="quote_already_answered",
            reason=f"quote {cmd.quote_id} already belongs to {holder}: a quote is never answered twice",
            direction=cmd.direction,
            asset_in=cmd.asset_in,
            asset_out=cmd.asset_out,
            amount_in=cmd.amount_in,
            amount_out=cmd.amount_out,
            command_received_at=now,
        )
        self.ex.log.warning(
            "command_refused", command_id=cmd.command_id, quote_id=cmd.quote_id, reason_code="quote_already_answered"
        )
        await self.ex.publisher.send_result(result, now, causation=event.event_id)

    async def refuse_new(self, event: Envelope[ExecuteTrade], refusal: Refusal, now: datetime) -> None:
        """A command refused before anything was signed: its first row written straight in
        `refused` (its hold, if it took one, released), the result published."""
        cmd = event.payload
        row = await self.ex.ledger().insert(
            event,
            now,
            S.REFUSED,
            now,
            reason=refusal.reason,
            reason_code=refusal.code,
            inventory_id=refusal.inventory_id,
            spendable_at_check=refusal.spendable,
            reserved_at_check=refusal.reserved,
        )
        if row is None:
            self.ex.book.release(cmd.command_id)
            await self._duplicate(event, now)
            return
        with self.ex.busy.working(row.command_id):
            await self.ex.publisher.written(row, noted=self._refusal_noted(row, refusal))

    def _refusal_noted(self, row: LedgerRow, refusal: Refusal) -> Callable[[LedgerRow], None]:
        def noted(_moved: LedgerRow) -> None:
            self.ex.refusals[refusal.code] += 1
            self.ex.log.info(
                "command_refused",
                command_id=row.command_id,
                quote_id=row.quote_id,
                reason_code=refusal.code,
                reason=refusal.reason,
            )
            self.ex.completed += 1

        return noted

    async def refuse(self, row: LedgerRow, refusal: Refusal, now: datetime) -> None:
        """A `received` row refused (one a start finds left from before it)."""

        with self.ex.busy.working(row.command_id):
            # None: past `received` already, not a refusal any more
            await self.ex.publisher.step(
                row.command_id,
                S.REFUSED,
                now,
                noted=self._refusal_noted(row, refusal),
                reason=refusal.reason,
                reason_code=refusal.code,
                inventory_id=refusal.inventory_id,
                spendable_at_check=refusal.spendable,
                reserved_at_check=refusal.reserved,
            )

    async def _send(self, stored: tuple[LedgerRow, SignedAnswer], cmd: ExecuteTrade) -> None:
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
